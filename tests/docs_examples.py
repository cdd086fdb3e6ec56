"""The Python examples of the README and the docs pages, as the example tests run them.

Every fenced ```` ```python ```` block is an example and runs as written, on its own, in a fresh
interpreter. An HTML comment on the line just before the fence (invisible on GitHub and on the
site) qualifies it:

* ``<!-- example: cuda -->``: needs a CUDA device; skipped where there is none.

There is no way to mark a block as a fragment: every example must run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARKS = {"cuda"}

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_MARK = re.compile(r"<!--\s*example:\s*([\w, -]+?)\s*-->\s*$")


@dataclass(frozen=True)
class Example:
    page: Path
    line: int
    code: str
    marks: frozenset[str]

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def examples(page: Path) -> list[Example]:
    """The ``python`` blocks of one Markdown page, with the marks of the comment before each."""
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = _MARK.search(before)
        marks = frozenset(m.strip() for m in mark.group(1).split(",")) if mark else frozenset()
        unknown = marks - MARKS
        if unknown:
            raise ValueError(f"{page}: unknown example mark(s) {sorted(unknown)}")
        line = text.count("\n", 0, match.start()) + 1
        found.append(Example(page, line, match.group(1), marks))
    return found


def all_examples() -> list[Example]:
    return [e for page in PAGES for e in examples(page)]
