// The Adam family's shared pieces: per-tensor constants, the update's expressions (macros, so
// that every loop spells the same arithmetic), and the adaptive factor's telemetry sums.

#pragma once

#include "kernels.h"

namespace rangerlab_kernels {
namespace {

// Per-tensor constants of the Adam family, passed by value so that the inner loops see plain
// locals (through a reference the compiler must assume a store to w may change them).
template <typename T>
struct AdamArgs {
  T b1w, b2, b2w, eps, wd_in, wd_out, a, inv_d, neg_lr, alpha;
  bool b1_small, alpha_small, coupled, decoupled, adaptive, sync;
};

// The loops below copy every constant into a local first (the compiler keeps locals in
// registers, struct members it must reload), and the flags that change the loop's body are
// template parameters, so that each variant vectorizes. kDecay (a template flag of every loop
// that uses these macros): weight decay is on, coupled (wd_in) or decoupled (wd_out), the other a
// 0 factor (adding 0 * w is exact for finite w; an inf weight still makes its moments NaN there,
// where the reference path's stay finite). Off, the loop has no decay term at all: two
// multiplications fewer per element, which a recorded step's sums need (the telemetry overhead
// of Adam's kernel without GC, 1 thread, interleaved in one process: 1.13-1.16 -> 1.02-1.05; with
// GC 1.11-1.14 -> 1.07-1.11), and, as in torch, an inf weight leaves its moments finite. The
// flag doubles the kernels' template instances (the build into an empty cache: 20 s -> 42 s).
#define RANGERLAB_ADAM_LOCALS(s)                                                          \
  const T b1w = s.b1w, b1r = T(1) - s.b1w, b2 = s.b2, b2w = s.b2w, eps = s.eps;           \
  const T wd_in = s.coupled ? s.wd_in : T(0), wd_out = s.decoupled ? s.wd_out : T(0);     \
  const T a = s.a, inv_d = s.inv_d, neg_lr = s.neg_lr, alpha = s.alpha;                   \
  const T alpha_r = T(1) - s.alpha;                                                       \
  const bool alpha_small = s.alpha_small

// Adam's moments (torch's lerp for m), for element j.
#define RANGERLAB_ADAM_MOMENTS(gj, wj, mj, vj)                                            \
  {                                                                                       \
    const T g_ = kDecay ? (gj) + wd_in * (wj) : (gj);                                     \
    if constexpr (kSmall) {                                                               \
      mj = mj + b1w * (g_ - mj);                                                          \
    } else {                                                                              \
      mj = g_ - (g_ - mj) * b1r;                                                          \
    }                                                                                     \
    vj = vj * b2 + b2w * g_ * g_;                                                         \
  }
// The direction u for element j.
#define RANGERLAB_ADAM_DIRECTION(u, wj, mj, vj)                                           \
  T u;                                                                                    \
  if constexpr (kAdaptive) {                                                              \
    u = kDecay ? (a * (mj)) * (T(1) / (std::sqrt(vj) * inv_d + eps)) + wd_out * (wj)      \
               : (a * (mj)) * (T(1) / (std::sqrt(vj) * inv_d + eps));                     \
  } else {                                                                                \
    u = kDecay ? (mj) * a + wd_out * (wj) : (mj) * a;                                     \
  }
// Lookahead: slow <- lerp(slow, w, alpha) (torch's lerp), w <- slow.
#define RANGERLAB_SYNC(wj, sj)                                                            \
  if constexpr (kSync) {                                                                  \
    sj = alpha_small ? sj + alpha * (wj - sj) : wj - (wj - sj) * alpha_r;                 \
    wj = sj;                                                                              \
  }

// The value the task's adaptive factors are summed about (shifted data): element b's factor
// after this step's moment update, set once per task.
template <typename T, typename Args>
inline T factor_shift(TaskStats* st, const Args& s, T wb, T gb, T vb) {
  if (st->q_n == 0) {
    const T g = gb + (s.coupled ? s.wd_in : T(0)) * wb;
    const T q = T(1) / (std::sqrt(vb * s.b2 + s.b2w * g * g) * s.inv_d + s.eps);
    st->q_shift = static_cast<double>(q);
  }
  return static_cast<T>(st->q_shift);
}

// Adds the shifted sums of the adaptive factor over len elements (a span's) to the task's.
inline void add_factors(TaskStats* st, int64_t len, double sum, double sum_sq) {
  st->q_n += static_cast<double>(len), st->q_sum += sum, st->q_sum_sq += sum_sq;
}

// With kStats the loops below run span by span (kStatSpan, or a GC row's end) with the
// sums as omp simd reductions; the update itself is the same expression as without, so the
// weights are bit-identical.

// The adaptive factor q = 1 / (sqrt(v) * (1 / d) + eps) of element j (the same expression as in
// the direction, so the compiler computes it once).
#define RANGERLAB_ADAM_FACTOR(vj) (T(1) / (std::sqrt(vj) * inv_d + eps))

// RANGERLAB_SYNC with (fast - slow)^2 added to sd first, its lerp formula chosen at compile time
// (kAlphaSmall): GCC leaves a loop with that choice made inside it unvectorized.
#define RANGERLAB_SYNC_MEASURED(wj, sj, sd)                                               \
  {                                                                                       \
    const T dj = (wj) - (sj);                                                             \
    sd += dj * dj;                                                                        \
    sj = kAlphaSmall ? (sj) + alpha * dj : (wj) - dj * alpha_r;                           \
    wj = sj;                                                                              \
  }

// Adam family: Adam/AdamW, RAdam, Ranger (+ Lookahead sync). Per tensor i the direction is
//   u = a_i * m * (1 / (sqrt(v) * (1 / d_i) + eps))   (adaptive_i),
//   u = a_i * m                                     (RAdam's start),
// with weight decay added to g (coupled) or to u (decoupled). The per-step scalars a, d and
// adaptive come from the transforms (adam_scalars, radam_scalars): they are not written here.
struct AdamConfig {
  double beta1, beta2, eps, weight_decay;
  bool decoupled;
};

template <typename T>
AdamArgs<T> adam_args(const AdamConfig& c, double a, double d, int64_t adaptive, double lr,
                      bool sync, double alpha) {
  AdamArgs<T> s;
  s.b1w = T(1 - c.beta1), s.b2 = T(c.beta2), s.b2w = T(1 - c.beta2), s.eps = T(c.eps);
  s.wd_in = T(c.weight_decay), s.wd_out = T(c.weight_decay), s.a = T(a), s.inv_d = T(1 / d);
  s.neg_lr = T(-lr), s.alpha = T(alpha);
  s.b1_small = std::abs(1 - c.beta1) < 0.5, s.alpha_small = std::abs(alpha) < 0.5;
  s.coupled = !c.decoupled && c.weight_decay != 0;
  s.decoupled = c.decoupled && c.weight_decay != 0;
  s.adaptive = adaptive != 0, s.sync = sync;
  return s;
}

}  // namespace
}  // namespace rangerlab_kernels
