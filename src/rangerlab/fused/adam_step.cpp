// The Adam family's one-pass step (Adam/AdamW, RAdam, Ranger).

#include "adam.h"

namespace rangerlab_kernels {
namespace {

// One pass: moments, direction, w -= lr * u, and the Lookahead sync on sync steps (a task
// without GC; adam_gc_task below is the one with).
template <typename T, bool kAdaptive, bool kSync, bool kSmall, bool kStats, bool kDecay>
void adam_row(const AdamArgs<T>& s, T* __restrict__ w, const T* __restrict__ g,
              T* __restrict__ m, T* __restrict__ v, T* __restrict__ slow, int64_t len,
              TaskStats* st) {
  RANGERLAB_ADAM_LOCALS(s);
  if constexpr (!kStats) {
    for (int64_t j = 0; j < len; ++j) {
      RANGERLAB_ADAM_MOMENTS(g[j], w[j], m[j], v[j]);
      RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);
      w[j] = w[j] + neg_lr * u;
      RANGERLAB_SYNC(w[j], slow[j]);
    }
  } else {
    for (int64_t b = 0; b < len; b += kStatSpan) {
      const int64_t stop = std::min(len, b + kStatSpan);
      T sw = 0, sg = 0, su = 0, sd = 0, sq = 0, sq2 = 0, shift = 0;
      if constexpr (kAdaptive) shift = factor_shift(st, s, w[b], g[b], v[b]);
      // the sync (on sync steps) in the same loop, measured
      with_flags([&](auto alpha_is_small) {
        constexpr bool kAlphaSmall = decltype(alpha_is_small)::value;
#pragma omp simd reduction(+ : sw, sg, su, sq, sq2, sd)
        for (int64_t j = b; j < stop; ++j) {
          sw += w[j] * w[j];
          sg += g[j] * g[j];
          RANGERLAB_ADAM_MOMENTS(g[j], w[j], m[j], v[j]);
          RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);
          su += u * u;
          if constexpr (kAdaptive) {
            const T q = RANGERLAB_ADAM_FACTOR(v[j]) - shift;
            sq += q, sq2 += q * q;
          }
          w[j] = w[j] + neg_lr * u;
          if constexpr (kSync) RANGERLAB_SYNC_MEASURED(w[j], slow[j], sd);
        }
      }, kSync && alpha_small);
      st->w_sq += sw, st->g_sq += sg, st->u_sq += su, st->dist_sq += sd;
      if constexpr (kAdaptive) add_factors(st, stop - b, sq, sq2);
    }
  }
}

// Gradient Centralization (for_gc_blocks): each block's update is an omp simd loop over its
// lanes, the same expressions as adam_row's; telemetry's sums are vectors carried across the
// task's rows, added into the task's doubles every kStatSpan elements.
template <typename T, bool kAdaptive, bool kSync, bool kSmall, bool kStats, bool kDecay>
void adam_gc_task(const AdamArgs<T>& s, const Task& task, int64_t numel, T* __restrict__ w,
                  const T* __restrict__ g, T* __restrict__ m, T* __restrict__ v,
                  T* __restrict__ slow, TaskStats* st) {
  RANGERLAB_ADAM_LOCALS(s);
  constexpr int64_t L = kLanes<T>;
  Vec<T> sw = {}, sg = {}, su = {}, sq = {}, sq2 = {}, sd = {};
  int64_t pending = 0;  // elements in the telemetry vectors
  T shift = 0;
  const Bits<T> alpha_mask = Bits<T>{} - (alpha_small ? 1 : 0);  // all ones, or none
  const auto flush = [&] {
    st->w_sq += lanes_total<T>(sw), st->g_sq += lanes_total<T>(sg);
    st->u_sq += lanes_total<T>(su), st->dist_sq += lanes_total<T>(sd);
    if constexpr (kAdaptive) add_factors(st, pending, lanes_total<T>(sq), lanes_total<T>(sq2));
    sw = sg = su = sq = sq2 = sd = Vec<T>{};
    pending = 0;
  };
  // One element: the update, and its telemetry terms in u_k, q_k, d_k; the Lookahead sync where
  // `sync` (the recorded step's blocks sync outside the element loop, below).
#define RANGERLAB_GC_ELEMENT(j, u_k, q_k, d_k, shift, sync)                     \
  {                                                                             \
    RANGERLAB_ADAM_MOMENTS(g[j] - mean, w[j], m[j], v[j]);                      \
    RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);                              \
    if constexpr (kStats) {                                                     \
      u_k = u;                                                                  \
      if constexpr (kAdaptive) q_k = RANGERLAB_ADAM_FACTOR(v[j]) - shift;       \
    }                                                                           \
    w[j] = w[j] + neg_lr * u;                                                   \
    if constexpr (kSync && (sync)) {                                            \
      const T dj = w[j] - slow[j];                                              \
      if constexpr (kStats) d_k = dj;                                           \
      slow[j] = alpha_small ? slow[j] + alpha * dj : w[j] - dj * alpha_r;       \
      w[j] = slow[j];                                                           \
    }                                                                           \
  }
  for_gc_blocks<kStats, T>(
      task, numel, g, st,
      [&](int64_t r, T mean) {
        if (kStats && kAdaptive && r == task.begin) {
          shift = factor_shift(st, s, w[r], g[r] - mean, v[r]);
        }
      },
      [&](int64_t b, T mean) {
        const T shift_ = shift;  // a local for the loop, not a read through the closure
        if constexpr (kStats) {
          const Vec<T> wv = load<T>(w + b), gv = load<T>(g + b);
          sw += wv * wv, sg += gv * gv;
        }
        T ut[L], qt[L], dt[L];
#pragma omp simd
        for (int64_t k = 0; k < L; ++k) {
          RANGERLAB_GC_ELEMENT(b + k, ut[k], qt[k], dt[k], shift_, !kStats);
        }
        if constexpr (kStats) {
          const Vec<T> uv = load<T>(ut);
          su += uv * uv;
          if constexpr (kAdaptive) {
            const Vec<T> qv = load<T>(qt);
            sq += qv, sq2 += qv * qv;
          }
          if constexpr (kSync) {
            // The sync on whole vectors, its lerp formula (torch's two) picked by a mask that
            // is the same for every block: in the element loop the choice was a branch there,
            // and its registers spilled (1.10x -> 1.06x of the unrecorded step, 1 thread).
            const Vec<T> wv = load<T>(w + b), sv = load<T>(slow + b), dv = wv - sv;
            sd += dv * dv;
            const Vec<T> now = select<T>(alpha_mask, sv + alpha * dv, wv - dv * alpha_r);
            std::memcpy(slow + b, &now, sizeof(now));
            std::memcpy(w + b, &now, sizeof(now));
          }
        }
      },
      [&](int64_t j, T mean) {
        T u0 = 0, q0 = 0, d0 = 0;
        if constexpr (kStats) sw[0] += w[j] * w[j], sg[0] += g[j] * g[j];
        RANGERLAB_GC_ELEMENT(j, u0, q0, d0, shift, true);
        if constexpr (kStats) su[0] += u0 * u0, sq[0] += q0, sq2[0] += q0 * q0, sd[0] += d0 * d0;
      },
      [&](int64_t n) {
        if constexpr (kStats) {
          pending += n;
          if (pending >= kStatSpan) flush();
        }
      });
#undef RANGERLAB_GC_ELEMENT
  if constexpr (kStats) flush();
}

}  // namespace

// One pass: moments, direction, w -= lr * u, and the Lookahead sync on sync steps. With `stats`
// (telemetry) every column but the ratio is filled in the same pass.
void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList slows, at::ArrayRef<double> a,
               at::ArrayRef<double> d, at::ArrayRef<int64_t> adaptive, double lr, double beta1,
               double beta2, double eps, double weight_decay, bool decoupled, bool gc, bool sync,
               double alpha, const std::optional<Tensor>& stats) {
  const int64_t n = params.size();
  check_lists({grads, exp_avgs, exp_avg_sqs}, n);
  if (sync) check_lists({slows}, n);
  double* out = stats_rows(stats, n);
  if (n == 0) return;
  const auto tasks = make_tasks(params, gc);
  std::vector<TaskStats> per_task(out != nullptr ? tasks.size() : 0);
  const AdamConfig c{beta1, beta2, eps, weight_decay, decoupled};
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_adam_step", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t t, const Task& task) {
      const int64_t i = task.index;
      const AdamArgs<T> s = adam_args<T>(c, a[i], d[i], adaptive[i], lr, sync, alpha);
      T* w = params[i].data_ptr<T>();
      const T* g = grads[i].data_ptr<T>();
      T* m = exp_avgs[i].data_ptr<T>();
      T* v = exp_avg_sqs[i].data_ptr<T>();
      T* slow = sync ? slows[i].data_ptr<T>() : nullptr;
      TaskStats* st = out != nullptr ? &per_task[t] : nullptr;
      with_flags(
          [&](auto A, auto S, auto B, auto R, auto D) {
            if (gc && task.row > 0) {
              adam_gc_task<T, A(), S(), B(), R(), D()>(s, task, params[i].numel(), w, g, m, v,
                                                       slow, st);
            } else {
              const int64_t b = task.begin;
              adam_row<T, A(), S(), B(), R(), D()>(s, w + b, g + b, m + b, v + b,
                                                   slow ? slow + b : nullptr, task.end - b, st);
            }
          },
          s.adaptive, s.sync, s.b1_small, st != nullptr, s.coupled || s.decoupled);
    });
  });
  fold_stats(out, tasks, per_task);
}

}  // namespace rangerlab_kernels
