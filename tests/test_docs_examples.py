"""Every Python example of the README and the docs pages runs as written (see docs_examples.py).

Each runs in a fresh interpreter in an empty folder (what it writes stays there), as one process
of a one-process ``torchrun`` (the FSDP2 checkpoint example calls ``init_process_group``), offline.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch

from docs_examples import PAGES, ROOT, all_examples, examples

EXAMPLES = all_examples()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs(example, tmp_path):
    if "cuda" in example.marks and not torch.cuda.is_available():
        pytest.skip("a CUDA example, and there is no CUDA device here")
    script = tmp_path / "example.py"
    script.write_text(example.code)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{example.name} failed:\n{done.stderr[-4000:]}"


def test_the_examples_are_found():
    # The README's quick start, composing, bf16, CUDA fp16, Lightning, HF Trainer and FSDP2
    # blocks, and one block on each of two docs pages: a broken extractor finds fewer.
    per_page = {page.name: len(examples(page)) for page in PAGES}
    assert per_page["README.md"] >= 7
    assert per_page["index.md"] >= 1 and per_page["ecosystem.md"] >= 1
    assert sum("cuda" in e.marks for e in EXAMPLES) == 1


def test_marks_are_read_and_unknown_marks_refused(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- example: cuda -->\n```python\nprint(1)\n```\n\n```python\nprint(2)\n```\n"
    )
    found = examples(page)
    assert [(e.line, e.code, sorted(e.marks)) for e in found] == [
        (4, "print(1)\n", ["cuda"]),
        (8, "print(2)\n", []),
    ]
    page.write_text("<!-- example: fragment -->\n```python\nx\n```\n")
    with pytest.raises(ValueError, match="unknown example mark"):
        examples(page)
