"""Triton kernels of the fused GPU step: element-wise work and reductions, nothing else.

Imported only when a step takes the Triton path (``rangerlab`` imports without triton). The
per-step scalars (bias corrections, RAdam's rectification, learning rate) and the trust ratios
arrive as per-tensor values in device tensors, computed by the transforms' own rules
(`rangerlab.fused.plans`); nothing here decides what the algorithm is.

Multi-tensor layout (the pointer-table pattern of triton's grouped-GEMM tutorial):

* ``ptrs``: int64 ``(lists, n)`` table of ``data_ptr()`` values, one row per list (weights,
  gradients, then each state list), loaded and cast to typed pointers inside the program;
* ``info``: int64 ``(n, 4)``: numel, row length ``R``, GC on (0/1), first momentum step (0/1);
* ``tasks``: int64 ``(T, 3)``: tensor index, first row, number of rows. Every program is one
  task: whole rows of one tensor (a tensor without GC is cut into rows of ``COLS`` elements), so
  Gradient Centralization's row mean is taken in the program that updates the row;
* ``scal``: float32 ``(n, 4)``: ``a``, ``d``, adaptive (0/1) and lr for the Adam family;
* ``ctl``: float32 ``(3,)`` on the device: the Lookahead sync flag, GradScaler's ``found_inf``
  (0 when none) and ``grad_scale`` (1 when none). A set ``found_inf`` makes every tensor look
  empty to the programs, so a skipped step changes nothing and moves no memory.

Offsets are int64 throughout (a 32-bit ``pid * BLOCK`` overflows past 2^31 elements). One launch
per pass per bucket: the grid is the task count. Norms for trust ratios are written as per-task
partial sums and summed per tensor in task order by `segment_sum` (deterministic: no float
atomics).
"""

from __future__ import annotations

import triton
import triton.language as tl

# Rows of the pointer tables (compiled kernels may read module globals only as constexprs).
_W, _G, _M, _V, _S = (tl.constexpr(i) for i in range(5))  # Adam: w, g, m, v, slow weights
_B = tl.constexpr(2)  # SGD: weights, gradients, momentum buffers


@triton.jit
def _ptr(ptrs, row, n, i, dtype: tl.constexpr):
    return tl.load(ptrs + row * n + i).to(tl.pointer_type(dtype))


@triton.jit
def _task(tasks, info, ctl, pid):
    """The program's task; a set found_inf (``ctl[1]``) makes the tensor look empty to it."""
    i = tl.load(tasks + 3 * pid)
    first = tl.load(tasks + 3 * pid + 1)
    rows = tl.load(tasks + 3 * pid + 2)
    go = (tl.load(ctl + 1) == 0).to(tl.int64)
    numel = tl.load(info + 4 * i) * go
    row_len = tl.load(info + 4 * i + 1)
    gc_on = tl.load(info + 4 * i + 2)
    return i, first, rows, numel, row_len, gc_on


@triton.jit
def _tile(first, rows, r, c, row_len, numel, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Offsets and mask of the tile at row ``r`` (of the task) and column ``c``."""
    row = first + r + tl.arange(0, ROWS).to(tl.int64)
    col = c + tl.arange(0, COLS).to(tl.int64)
    offs = row[:, None] * row_len + col[None, :]
    mask = (row < first + rows)[:, None] & (col < row_len)[None, :] & (offs < numel)
    return offs, mask


@triton.jit
def _row_means(g_ptr, first, rows, r, row_len, gc_on, numel, inv_scale,
               ROWS: tl.constexpr, COLS: tl.constexpr):  # fmt: skip
    """GC's per-row mean of the unscaled gradient for the tile's rows (0 where GC is off)."""
    total = tl.zeros((ROWS,), dtype=tl.float32)
    for c in range(0, row_len * gc_on, COLS):
        offs, mask = _tile(first, rows, r, c, row_len, numel, ROWS, COLS)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32) * inv_scale
        total += tl.sum(g, axis=1)
    return total / row_len.to(tl.float32)


@triton.jit
def _inv_scale(ctl):
    """1 / grad_scale: gradients are divided by GradScaler's scale, as torch's fused Adam does."""
    return 1.0 / tl.load(ctl + 2)


@triton.jit
def _rounded(x, dtype: tl.constexpr):
    """``x`` (float32) rounded to nearest-even in ``dtype``, as torch rounds.

    bf16 is rounded here in integer arithmetic: the GPU's conversion already rounds so, but
    triton's interpreter truncates, and the tests run there.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)


@triton.jit
def _lerp(start, end, weight):
    """torch's lerp, rounding included: the form depends on whether weight < 0.5."""
    return tl.where(
        weight < 0.5, start + weight * (end - start), end - (end - start) * (1 - weight)
    )


@triton.jit
def _adam_direction(m, v, w, a, d, adaptive, eps, wd_out):
    root = tl.sqrt(v) / d + eps
    u = tl.where(adaptive != 0, (a * m) / root, m * a)
    return u + wd_out * w


@triton.jit
def adam_kernel(
    ptrs, n, info, tasks, scal, ratios, partials, ctl,
    beta1, beta2, eps, wd_in, wd_out, alpha,
    W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, MODE: tl.constexpr, GC: tl.constexpr,
    LOOKAHEAD: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """Adam family. MODE 0: one pass (moments, direction, update, sync). MODE 1: moments and
    per-task squared norms of w and u (trust ratio). MODE 2: update with ``ratios`` and sync."""
    pid = tl.program_id(0).to(tl.int64)
    i, first, rows, numel, row_len, gc_on = _task(tasks, info, ctl, pid)
    inv_scale = _inv_scale(ctl)
    w_ptr = _ptr(ptrs, _W, n, i, W_DTYPE)
    g_ptr = _ptr(ptrs, _G, n, i, G_DTYPE)
    m_ptr = _ptr(ptrs, _M, n, i, tl.float32)
    v_ptr = _ptr(ptrs, _V, n, i, tl.float32)
    a = tl.load(scal + 4 * i)
    d = tl.load(scal + 4 * i + 1)
    adaptive = tl.load(scal + 4 * i + 2)
    lr = tl.load(scal + 4 * i + 3)
    ratio = 1.0
    if MODE == 2:
        ratio = tl.load(ratios + i)
    sync = tl.load(ctl) != 0
    synced = tl.where(sync, numel, 0)  # the slow weights' extent: all on sync steps, else none
    w_sq = tl.zeros((ROWS,), dtype=tl.float32)
    u_sq = tl.zeros((ROWS,), dtype=tl.float32)
    for r in range(0, rows, ROWS):
        mean = tl.zeros((ROWS,), dtype=tl.float32)
        if GC:
            if MODE != 2:
                mean = _row_means(g_ptr, first, rows, r, row_len, gc_on, numel, inv_scale,
                                  ROWS, COLS)  # fmt: skip
        for c in range(0, row_len, COLS):
            offs, mask = _tile(first, rows, r, c, row_len, numel, ROWS, COLS)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            m = tl.load(m_ptr + offs, mask=mask, other=0.0)
            v = tl.load(v_ptr + offs, mask=mask, other=0.0)
            if MODE != 2:
                g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32) * inv_scale
                g = g - mean[:, None] + wd_in * w
                m = _lerp(m, g, 1.0 - beta1)
                v = v * beta2 + (1.0 - beta2) * g * g
                tl.store(m_ptr + offs, m, mask=mask)
                tl.store(v_ptr + offs, v, mask=mask)
            u = _adam_direction(m, v, w, a, d, adaptive, eps, wd_out)
            if MODE == 1:
                u = tl.where(mask, u, 0.0)
                w_sq += tl.sum(w * w, axis=1)
                u_sq += tl.sum(u * u, axis=1)
            else:
                w = w - lr * (u * ratio)
                if LOOKAHEAD:
                    s_ptr = _ptr(ptrs, _S, n, i, tl.float32)
                    s_mask = mask & (offs < synced)
                    slow = tl.load(s_ptr + offs, mask=s_mask, other=0.0)
                    slow = _lerp(slow, w, alpha)
                    tl.store(s_ptr + offs, slow, mask=s_mask)
                    w = tl.where(sync, slow, w)
                tl.store(w_ptr + offs, _rounded(w, W_DTYPE), mask=mask)
    if MODE == 1:
        tl.store(partials + 2 * pid, tl.sum(w_sq, axis=0))
        tl.store(partials + 2 * pid + 1, tl.sum(u_sq, axis=0))


@triton.jit
def sgd_kernel(
    ptrs, n, info, tasks, ratios, partials, ctl,
    lr, momentum, dampening, weight_decay,
    W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, MODE: tl.constexpr, GC: tl.constexpr,
    MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, TRUST: tl.constexpr,
    ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """SGD and LARS/LARC. MODE 1: per-task squared norms of w and the centralized g. MODE 0:
    ``d = ratio * (g + wd w)``, torch-SGD momentum (``v = d`` on a buffer's first step), update."""
    pid = tl.program_id(0).to(tl.int64)
    i, first, rows, numel, row_len, gc_on = _task(tasks, info, ctl, pid)
    fresh = tl.load(info + 4 * i + 3)
    inv_scale = _inv_scale(ctl)
    w_ptr = _ptr(ptrs, _W, n, i, W_DTYPE)
    g_ptr = _ptr(ptrs, _G, n, i, G_DTYPE)
    ratio = 1.0
    if TRUST:
        if MODE == 0:
            ratio = tl.load(ratios + i)
    w_sq = tl.zeros((ROWS,), dtype=tl.float32)
    g_sq = tl.zeros((ROWS,), dtype=tl.float32)
    for r in range(0, rows, ROWS):
        mean = tl.zeros((ROWS,), dtype=tl.float32)
        if GC:
            mean = _row_means(g_ptr, first, rows, r, row_len, gc_on, numel, inv_scale,
                              ROWS, COLS)  # fmt: skip
        for c in range(0, row_len, COLS):
            offs, mask = _tile(first, rows, r, c, row_len, numel, ROWS, COLS)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32) * inv_scale
            g = tl.where(mask, g - mean[:, None], 0.0)
            if MODE == 1:
                w_sq += tl.sum(w * w, axis=1)
                g_sq += tl.sum(g * g, axis=1)
            else:
                step = (g + weight_decay * w) * ratio
                if MOMENTUM:
                    b_ptr = _ptr(ptrs, _B, n, i, tl.float32)
                    buf = tl.load(b_ptr + offs, mask=mask, other=0.0)
                    buf = tl.where(fresh != 0, step, buf * momentum + (1.0 - dampening) * step)
                    tl.store(b_ptr + offs, buf, mask=mask)
                    if NESTEROV:
                        step = step + momentum * buf
                    else:
                        step = buf
                w = w - lr * step
                tl.store(w_ptr + offs, _rounded(w, W_DTYPE), mask=mask)
    if MODE == 1:
        tl.store(partials + 2 * pid, tl.sum(w_sq, axis=0))
        tl.store(partials + 2 * pid + 1, tl.sum(g_sq, axis=0))


@triton.jit
def segment_sum(partials, bounds, out):
    """Per tensor, the sum of its tasks' partial squared norms, in task order (deterministic)."""
    i = tl.program_id(0).to(tl.int64)
    pair = tl.arange(0, 2)
    start = tl.load(bounds + i)
    stop = tl.load(bounds + i + 1)
    total = tl.zeros((2,), dtype=tl.float32)
    for t in range(start, stop):
        total += tl.load(partials + 2 * t + pair)
    tl.store(out + 2 * i + pair, total)
