"""The Triton kernels compile for NVIDIA GPUs (sm_80, sm_90), without a GPU.

The interpreter (``test_triton.py``) runs the kernels' arithmetic but not triton's compiler, which
rejects things the interpreter accepts (a module global that is not a constexpr, a type that
changes across a branch). triton's wheel carries ``ptxas``, so the compiler runs to machine code
here; a fresh process, because ``test_triton.py`` switches its process to the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

triton = pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from rangerlab.fused import triton_kernels as tk

    tables = {"ptrs": "*i64", "n": "i64", "info": "*i64", "tasks": "*i64", "ratios": "*fp32",
              "partials": "*fp32", "ctl": "*fp32"}
    with_stats = dict(tables, stats="*fp32")  # the telemetry variants' one more table
    adam = dict(tables, scal="*fp32", beta1="fp32", beta2="fp32", eps="fp32", wd_in="fp32",
                wd_out="fp32", alpha="fp32")
    sgd = dict(tables, lr="fp32", momentum="fp32", dampening="fp32", weight_decay="fp32")

    def build(fn, signature, **constants):
        signature = dict(signature, **{k: "constexpr" for k in constants})
        for arch in (80, 90):
            triton.compile(ASTSource(fn, signature, constants), target=GPUTarget("cuda", arch, 32))

    for mode, w in ((0, tl.bfloat16), (1, tl.float32), (2, tl.float16)):
        build(tk.adam_kernel, adam, W_DTYPE=w, G_DTYPE=w, MODE=mode, GC=True, LOOKAHEAD=True,
              ROWS=16, COLS=64)
    for mode, w in ((0, tl.bfloat16), (1, tl.float32)):
        build(tk.sgd_kernel, sgd, W_DTYPE=w, G_DTYPE=w, MODE=mode, GC=True, MOMENTUM=True,
              NESTEROV=True, TRUST=True, ROWS=16, COLS=64)
    build(tk.segment_sum, {"partials": "*fp32", "bounds": "*i64", "out": "*fp32"})
    # telemetry: the stats variants (their MODE 1 for SGD is sgd_kernel's) and their reduction
    for mode, w in ((0, tl.bfloat16), (1, tl.float32), (2, tl.float16)):
        build(tk.adam_stats_kernel, dict(adam, **with_stats), W_DTYPE=w, G_DTYPE=w, MODE=mode,
              GC=True, LOOKAHEAD=True, ROWS=16, COLS=64)
    build(tk.sgd_stats_kernel, dict(sgd, **with_stats), W_DTYPE=tl.bfloat16, G_DTYPE=tl.bfloat16,
          MODE=0, GC=True, MOMENTUM=True, NESTEROV=True, TRUST=True, ROWS=16, COLS=64)
    build(tk.segment_stats, {"partials": "*fp32", "bounds": "*i64", "out": "*fp64"})
    print("compiled")
    """
)


def test_kernels_compile_for_sm80_and_sm90(tmp_path):
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip("this triton build carries no ptxas")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET",)}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-3000:]
