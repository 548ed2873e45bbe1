"""The golden run: a short training trajectory must reproduce its pinned numbers to 1e-9.

The pinned file is the code's own earlier output (see ``regenerate.py``): this test catches
refactors that change results; correctness is checked elsewhere against independent references.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from regenerate import CONFIG, FORMAT, GOLDEN, PROBE_BATCH, PROBE_SEED, VERSION, trajectory

RTOL = 1e-9


@pytest.fixture(scope="module")
def golden() -> dict:
    doc = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert (doc["format"], doc["version"]) == (FORMAT, VERSION)
    return doc


def test_golden_file_matches_the_script(golden):
    """A config edited in regenerate.py without regenerating the file is caught here."""
    assert golden["config"] == CONFIG
    assert golden["final"]["probe"] == {"seed": PROBE_SEED, "batch": PROBE_BATCH, "split": "val"}
    assert len(golden["losses"]) == len(golden["grad_norms"]) == CONFIG["steps"]
    assert "regenerate.py" in golden["note"] and "commit message" in golden["note"]


def test_golden_run_reproduces(golden, tmp_path):
    got = trajectory(golden["config"], tmp_path / "run")
    np.testing.assert_allclose(got["losses"], golden["losses"], rtol=RTOL, atol=0)
    np.testing.assert_allclose(got["grad_norms"], golden["grad_norms"], rtol=RTOL, atol=0)
    final, want = got["final"], golden["final"]
    assert final["probe_loss"] == pytest.approx(want["probe_loss"], rel=RTOL, abs=0)
    for key in ("grad_norms", "param_norms"):
        assert sorted(final[key]) == sorted(want[key]) == ["U", "V", "W", "b_h", "b_y"]
        for name, value in want[key].items():
            assert final[key][name] == pytest.approx(value, rel=RTOL, abs=0), (key, name)
    # the run learns something: a fixed trajectory that went nowhere would pin little
    assert np.mean(golden["losses"][-5:]) < np.mean(golden["losses"][:5])
