"""Save the tutorial's figure (section 5, the Jacobian products of a tanh RNN and an IRNN) as
``docs/figures/tutorial_jacobian_products.png``: the tutorial's own code cells are run in
order, up to the one that draws it, and that figure is written.

    PYTHONPATH=src python docs/make_tutorial_figure.py
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DOCS = Path(__file__).resolve().parent
TUTORIAL = DOCS / "tutorial.md"
OUT = DOCS / "figures" / "tutorial_jacobian_products.png"


def main() -> None:
    cells = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(encoding="utf-8"), re.S)
    namespace: dict[str, object] = {}
    for code in cells:
        drawn = "plot_jacobian_products(" in code
        exec(compile(code.replace("plt.show()", ""), str(TUTORIAL), "exec"), namespace)
        if drawn:
            plt.gcf().savefig(OUT, dpi=110)
            print(f"wrote {OUT}")
            return
    raise SystemExit("no cell of the tutorial draws plot_jacobian_products")


if __name__ == "__main__":
    main()
