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

Telemetry (`rangerlab.fused.stats`): the ``*_stats_kernel`` entry points run the same passes with
``STATS`` set and write per-task float32 partials ``(T, 8)`` (the first eight stats columns: w_sq,
g_sq, u_sq, q count, q mean, q M2, gc_sq, dist_sq); `segment_stats` combines them per tensor in
task order in float64. The adaptive factor's spread is kept as count, mean and sum of squared
deviations, combined pairwise (Chan, Golub and LeVeque, "Algorithms for computing the sample
variance", The American Statistician 37(3), 1983): per row lane over tiles, then over the lanes,
then over the tasks, so no float32 sum of squares is ever differenced. ``adam_kernel`` and
``sgd_kernel`` run the same pass bodies with ``STATS`` off and compile to the same machine code
as before telemetry existed (PTX compared for sm_90).

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
def _chan(n, mean, m2, count, tile_mean, tile_m2):
    """Count, mean and M2 of two parts combined: ``delta = mean_b - mean_a``, ``n = n_a + n_b``,
    ``mean = mean_a + delta n_b / n``, ``M2 = M2_a + M2_b + delta^2 n_a n_b / n`` (Chan, Golub and
    LeVeque 1983); an empty part changes nothing."""
    total = n + count
    frac = count / tl.maximum(total, 1.0)
    delta = tile_mean - mean
    return total, mean + delta * frac, m2 + tile_m2 + delta * delta * n * frac


@triton.jit
def _q_moments(v, d, eps, adaptive, mask, q_n, q_mean, q_m2):
    """The tile's adaptive factors ``1 / (sqrt(v) / d + eps)`` folded into per-row-lane moments
    (nothing on a step that is not adaptive)."""
    on = (mask.to(tl.float32) * adaptive) != 0  # adaptive: 0 or 1
    q = tl.where(on, 1.0 / (tl.sqrt(v) / d + eps), 0.0)
    count = tl.sum(on.to(tl.float32), axis=1)
    tile_mean = tl.sum(q, axis=1) / tl.maximum(count, 1.0)
    dev = tl.where(on, q - tile_mean[:, None], 0.0)
    return _chan(q_n, q_mean, q_m2, count, tile_mean, tl.sum(dev * dev, axis=1))


@triton.jit
def _store_q(out, q_n, q_mean, q_m2):
    """The program's q count, mean and M2 (columns 3-5) from its row lanes' moments."""
    count = tl.sum(q_n, axis=0)
    mean = tl.sum(q_n * q_mean, axis=0) / tl.maximum(count, 1.0)
    dev = q_mean - mean
    tl.store(out + 3, count)
    tl.store(out + 4, mean)
    tl.store(out + 5, tl.sum(q_m2 + q_n * dev * dev, axis=0))


@triton.jit
def adam_kernel(
    ptrs, n, info, tasks, scal, ratios, partials, ctl,
    beta1, beta2, eps, wd_in, wd_out, alpha,
    W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, MODE: tl.constexpr, GC: tl.constexpr,
    LOOKAHEAD: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """Adam family. MODE 0: one pass (moments, direction, update, sync). MODE 1: moments and
    per-task squared norms of w and u (trust ratio). MODE 2: update with ``ratios`` and sync."""
    _adam_pass(ptrs, n, info, tasks, scal, ratios, partials, ctl, ctl,
               beta1, beta2, eps, wd_in, wd_out, alpha,
               W_DTYPE, G_DTYPE, MODE, GC, LOOKAHEAD, False, ROWS, COLS)  # fmt: skip


@triton.jit
def adam_stats_kernel(
    ptrs, n, info, tasks, scal, ratios, partials, ctl, stats,
    beta1, beta2, eps, wd_in, wd_out, alpha,
    W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, MODE: tl.constexpr, GC: tl.constexpr,
    LOOKAHEAD: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """`adam_kernel` that also writes the task's telemetry partials to ``stats`` ``(T, 8)``:
    MODE 0 all of them, MODE 1 those of the moments pass (w, g, q, GC), MODE 2 those of the
    update pass (u with the trust ratio, Lookahead distance)."""
    _adam_pass(ptrs, n, info, tasks, scal, ratios, partials, ctl, stats,
               beta1, beta2, eps, wd_in, wd_out, alpha,
               W_DTYPE, G_DTYPE, MODE, GC, LOOKAHEAD, True, ROWS, COLS)  # fmt: skip


@triton.jit
def _adam_pass(
    ptrs, n, info, tasks, scal, ratios, partials, ctl, stats,
    beta1, beta2, eps, wd_in, wd_out, alpha,
    W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, MODE: tl.constexpr, GC: tl.constexpr,
    LOOKAHEAD: tl.constexpr, STATS: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
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
    if STATS:  # per row lane: the stats columns (u: the final direction), q's moments
        s_g = tl.zeros((ROWS,), dtype=tl.float32)
        s_u = tl.zeros((ROWS,), dtype=tl.float32)
        s_gc = tl.zeros((ROWS,), dtype=tl.float32)
        s_dist = tl.zeros((ROWS,), dtype=tl.float32)
        q_n = tl.zeros((ROWS,), dtype=tl.float32)
        q_mean = tl.zeros((ROWS,), dtype=tl.float32)
        q_m2 = tl.zeros((ROWS,), dtype=tl.float32)
    for r in range(0, rows, ROWS):
        mean = tl.zeros((ROWS,), dtype=tl.float32)
        if GC:
            if MODE != 2:
                mean = _row_means(g_ptr, first, rows, r, row_len, gc_on, numel, inv_scale,
                                  ROWS, COLS)  # fmt: skip
                if STATS:
                    s_gc += row_len.to(tl.float32) * mean * mean
        for c in range(0, row_len, COLS):
            offs, mask = _tile(first, rows, r, c, row_len, numel, ROWS, COLS)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            m = tl.load(m_ptr + offs, mask=mask, other=0.0)
            v = tl.load(v_ptr + offs, mask=mask, other=0.0)
            if MODE != 2:
                g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32) * inv_scale
                if STATS:
                    s_g += tl.sum(g * g, axis=1)
                g = g - mean[:, None] + wd_in * w
                m = _lerp(m, g, 1.0 - beta1)
                v = v * beta2 + (1.0 - beta2) * g * g
                tl.store(m_ptr + offs, m, mask=mask)
                tl.store(v_ptr + offs, v, mask=mask)
                if STATS:
                    q_n, q_mean, q_m2 = _q_moments(v, d, eps, adaptive, mask, q_n, q_mean, q_m2)
                    if MODE == 0:
                        w_sq += tl.sum(w * w, axis=1)  # MODE 1 sums it anyway
            u = _adam_direction(m, v, w, a, d, adaptive, eps, wd_out)
            if MODE == 1:
                u = tl.where(mask, u, 0.0)
                w_sq += tl.sum(w * w, axis=1)
                u_sq += tl.sum(u * u, axis=1)
            else:
                if STATS:
                    step = tl.where(mask, u * ratio, 0.0)
                    s_u += tl.sum(step * step, axis=1)
                w = w - lr * (u * ratio)
                if LOOKAHEAD:
                    s_ptr = _ptr(ptrs, _S, n, i, tl.float32)
                    s_mask = mask & (offs < synced)
                    slow = tl.load(s_ptr + offs, mask=s_mask, other=0.0)
                    if STATS:  # all masked off unless this is a sync step
                        dist = tl.where(s_mask, w - slow, 0.0)
                        s_dist += tl.sum(dist * dist, axis=1)
                    slow = _lerp(slow, w, alpha)
                    tl.store(s_ptr + offs, slow, mask=s_mask)
                    w = tl.where(sync, slow, w)
                tl.store(w_ptr + offs, _rounded(w, W_DTYPE), mask=mask)
    if MODE == 1:
        tl.store(partials + 2 * pid, tl.sum(w_sq, axis=0))
        tl.store(partials + 2 * pid + 1, tl.sum(u_sq, axis=0))
    if STATS:
        out = stats + 8 * pid
        if MODE != 2:
            tl.store(out, tl.sum(w_sq, axis=0))
            tl.store(out + 1, tl.sum(s_g, axis=0))
            _store_q(out, q_n, q_mean, q_m2)
            tl.store(out + 6, tl.sum(s_gc, axis=0))
        if MODE != 1:
            tl.store(out + 2, tl.sum(s_u, axis=0))
            tl.store(out + 7, tl.sum(s_dist, axis=0))


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
    _sgd_pass(ptrs, n, info, tasks, ratios, partials, ctl, ctl,
              lr, momentum, dampening, weight_decay,
              W_DTYPE, G_DTYPE, MODE, GC, MOMENTUM, NESTEROV, TRUST, False, ROWS, COLS)  # fmt: skip


@triton.jit
def sgd_stats_kernel(
    ptrs, n, info, tasks, ratios, partials, ctl, stats,
    lr, momentum, dampening, weight_decay,
    W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, MODE: tl.constexpr, GC: tl.constexpr,
    MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, TRUST: tl.constexpr,
    ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
    """`sgd_kernel` whose update pass (MODE 0) also writes the task's telemetry partials to
    ``stats`` ``(T, 8)``; the norms pass (MODE 1) adds nothing."""
    _sgd_pass(ptrs, n, info, tasks, ratios, partials, ctl, stats,
              lr, momentum, dampening, weight_decay,
              W_DTYPE, G_DTYPE, MODE, GC, MOMENTUM, NESTEROV, TRUST, MODE == 0,
              ROWS, COLS)  # fmt: skip


@triton.jit
def _sgd_pass(
    ptrs, n, info, tasks, ratios, partials, ctl, stats,
    lr, momentum, dampening, weight_decay,
    W_DTYPE: tl.constexpr, G_DTYPE: tl.constexpr, MODE: tl.constexpr, GC: tl.constexpr,
    MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr, TRUST: tl.constexpr, STATS: tl.constexpr,
    ROWS: tl.constexpr, COLS: tl.constexpr,
):  # fmt: skip
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
    if STATS:  # per row lane (g: as received; u: the direction after momentum)
        s_u = tl.zeros((ROWS,), dtype=tl.float32)
        s_gc = tl.zeros((ROWS,), dtype=tl.float32)
    for r in range(0, rows, ROWS):
        mean = tl.zeros((ROWS,), dtype=tl.float32)
        if GC:
            mean = _row_means(g_ptr, first, rows, r, row_len, gc_on, numel, inv_scale,
                              ROWS, COLS)  # fmt: skip
            if STATS:
                s_gc += row_len.to(tl.float32) * mean * mean
        for c in range(0, row_len, COLS):
            offs, mask = _tile(first, rows, r, c, row_len, numel, ROWS, COLS)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32) * inv_scale
            if STATS:
                w_sq += tl.sum(w * w, axis=1)
                g_sq += tl.sum(g * g, axis=1)
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
                if STATS:
                    u = tl.where(mask, step, 0.0)
                    s_u += tl.sum(u * u, axis=1)
                w = w - lr * step
                tl.store(w_ptr + offs, _rounded(w, W_DTYPE), mask=mask)
    if MODE == 1:
        tl.store(partials + 2 * pid, tl.sum(w_sq, axis=0))
        tl.store(partials + 2 * pid + 1, tl.sum(g_sq, axis=0))
    if STATS:
        out = stats + 8 * pid
        tl.store(out, tl.sum(w_sq, axis=0))
        tl.store(out + 1, tl.sum(g_sq, axis=0))
        tl.store(out + 2, tl.sum(s_u, axis=0))
        tl.store(out + 3, 0.0)
        tl.store(out + 4, 0.0)
        tl.store(out + 5, 0.0)
        tl.store(out + 6, tl.sum(s_gc, axis=0))
        tl.store(out + 7, 0.0)


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


@triton.jit
def segment_stats(partials, bounds, out):
    """Per tensor, its tasks' telemetry partials ``(T, 8)`` combined in task order, in float64,
    into the first eight columns of its row of ``out`` (the ``(n, 9)`` stats).

    Sums for the sums; for q the count, then the mean as the count-weighted mean of the tasks'
    means, then M2 as the tasks' M2 plus ``count * (task mean - mean)^2`` (Chan et al.).
    """
    i = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, 8)
    start = tl.load(bounds + i)
    stop = tl.load(bounds + i + 1)
    total = tl.zeros((8,), dtype=tl.float64)
    for t in range(start, stop):
        part = tl.load(partials + 8 * t + cols).to(tl.float64)
        count = tl.sum(tl.where(cols == 3, part, 0.0), axis=0)
        total += tl.where(cols == 4, count * part, part)  # column 4: count * mean
    count = tl.sum(tl.where(cols == 3, total, 0.0), axis=0)
    mean = tl.sum(tl.where(cols == 4, total, 0.0), axis=0) / tl.maximum(count, 1.0)
    spread = tl.zeros((8,), dtype=tl.float64)
    for t in range(start, stop):
        part = tl.load(partials + 8 * t + cols).to(tl.float64)
        dev = tl.sum(tl.where(cols == 4, part, 0.0), axis=0) - mean
        spread += tl.where(cols == 5, tl.sum(tl.where(cols == 3, part, 0.0), axis=0) * dev * dev,
                           0.0)  # fmt: skip
    tl.store(out + 9 * i + cols, tl.where(cols == 4, mean, total + spread))
