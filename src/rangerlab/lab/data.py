"""Real data that ships with the install: scikit-learn's digits and the standard library's text.

Nothing is downloaded. Both loaders are deterministic: the same data, in the same order, on every
call with the same arguments.
"""

from __future__ import annotations

import ast
import functools
import string
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

#: The characters of the text corpus; everything else becomes a space.
CHARSET = string.printable[:95] + "\n"  # digits, letters, punctuation, space, newline


@dataclass(frozen=True)
class Digits:
    """The 8x8 handwritten digits, split once (stratified, fixed split seed) into train and test.

    Images are ``(N, 1, 8, 8)`` float32 in [0, 1]; labels are int64 in 0..9.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


@functools.lru_cache(maxsize=2)
def load_digits(test_fraction: float = 0.2) -> Digits:
    """Load scikit-learn's digits (1,797 images) as tensors with a fixed stratified split.

    Args:
        test_fraction: fraction of the images held out for testing, in (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = bunch.images.astype("float32") / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=test_fraction, stratify=bunch.target, random_state=0
    )
    as_x = lambda a: torch.from_numpy(a).unsqueeze(1).contiguous()  # noqa: E731
    as_y = lambda a: torch.from_numpy(a).long()  # noqa: E731
    return Digits(as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te))


SPLITS = ("val", "test")


@functools.lru_cache(maxsize=4)
def digits_split(split: str) -> Digits:
    """The digits for tuning (``split="val"``) or for scoring (``split="test"``).

    The training part of :func:`load_digits` is split once more (stratified, fixed seed) into
    1,149 images to train on and 288 to validate on; ``"val"`` evaluates on those 288 and
    ``"test"`` on the 360 held-out test images. Training uses the same 1,149 images either way,
    so a rate tuned on ``"val"`` is scored on images it never saw.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    from sklearn.model_selection import train_test_split

    base = load_digits()
    x_tr, x_val, y_tr, y_val = train_test_split(
        base.x_train, base.y_train, test_size=0.2, stratify=base.y_train, random_state=1
    )
    if split == "val":
        return Digits(x_tr, y_tr, x_val, y_val)
    return Digits(x_tr, y_tr, base.x_test, base.y_test)


def text_split(split: str, chars: int) -> tuple[Tensor, Tensor]:
    """Encoded standard-library text: the first 80% to train on, then 10% to validate on
    (``split="val"``) and the last 10% to test on (``"test"``). Returns ``(train, held_out)``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    ids = encode(load_stdlib_text(chars))
    a, b = int(0.8 * len(ids)), int(0.9 * len(ids))
    return ids[:a], (ids[a:b] if split == "val" else ids[b:])


def _docstrings(path: Path) -> list[str]:
    """Module, class and function docstrings of one source file, in source order."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = [n for n in ast.walk(tree) if isinstance(n, kinds)]
    found.sort(key=lambda n: getattr(n, "lineno", 0))
    docs = (ast.get_docstring(n) for n in found)
    return [d for d in docs if d and len(d) > 40]


def stdlib_sources() -> list[Path]:
    """The standard library's ``.py`` files, sorted, without tests and third-party packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3", "__pycache__"}
    files = [p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts)]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


@functools.lru_cache(maxsize=4)
def load_stdlib_text(max_chars: int = 400_000) -> str:
    """English text from the docstrings of the Python standard library, at most ``max_chars`` long.

    The docstrings are read from the installed standard library's source files in sorted order,
    so the text is the same on every call (and on every machine with the same Python version).
    Characters outside :data:`CHARSET` become spaces.

    Args:
        max_chars: the length to stop at (a positive int).
    """
    if not isinstance(max_chars, int) or max_chars <= 0:
        raise ValueError(f"max_chars must be a positive int, got {max_chars!r}")
    allowed = set(CHARSET)
    parts: list[str] = []
    total = 0
    for path in stdlib_sources():
        for doc in _docstrings(path):
            clean = "".join(c if c in allowed else " " for c in doc) + "\n\n"
            parts.append(clean)
            total += len(clean)
            if total >= max_chars:
                return "".join(parts)[:max_chars]
    if not parts:
        raise RuntimeError("no docstrings found in the standard library; is its source installed?")
    return "".join(parts)[:max_chars]


def encode(text: str) -> Tensor:
    """Map ``text`` to int64 indices into :data:`CHARSET` (unknown characters map to space)."""
    index = {c: i for i, c in enumerate(CHARSET)}
    space = index[" "]
    return torch.tensor([index.get(c, space) for c in text], dtype=torch.long)
