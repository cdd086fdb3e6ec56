// The Adam family's one-pass step (Adam/AdamW, RAdam, Ranger).

#include "adam.h"

namespace rangerlab_kernels {
namespace {

// One pass: moments, direction, w -= lr * u, and the Lookahead sync on sync steps.
template <typename T, bool kAdaptive, bool kSync, bool kSmall, bool kStats, bool kDecay>
void adam_row(const AdamArgs<T>& s, T* __restrict__ w, const T* __restrict__ g,
              T* __restrict__ m, T* __restrict__ v, T* __restrict__ slow, int64_t len, T mean,
              TaskStats* st) {
  RANGERLAB_ADAM_LOCALS(s);
  if constexpr (!kStats) {
    for (int64_t j = 0; j < len; ++j) {
      RANGERLAB_ADAM_MOMENTS(g[j] - mean, w[j], m[j], v[j]);
      RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);
      w[j] = w[j] + neg_lr * u;
      RANGERLAB_SYNC(w[j], slow[j]);
    }
  } else {
    for (int64_t b = 0; b < len; b += kStatSpan) {
      const int64_t stop = std::min(len, b + kStatSpan);
      T sw = 0, sg = 0, su = 0, sd = 0, sq = 0, sq2 = 0, shift = 0;
      if constexpr (kAdaptive) shift = factor_shift(st, s, w[b], g[b] - mean, v[b]);
      // the sync (on sync steps) in the same loop, measured
      with_flags([&](auto alpha_is_small) {
        constexpr bool kAlphaSmall = decltype(alpha_is_small)::value;
#pragma omp simd reduction(+ : sw, sg, su, sq, sq2, sd)
        for (int64_t j = b; j < stop; ++j) {
          sw += w[j] * w[j];
          sg += g[j] * g[j];
          RANGERLAB_ADAM_MOMENTS(g[j] - mean, w[j], m[j], v[j]);
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
            for_rows<R()>(task, g, gc, st, [&](int64_t b, int64_t len, T mean) {
              adam_row<T, A(), S(), B(), R(), D()>(s, w + b, g + b, m + b, v + b,
                                                   slow ? slow + b : nullptr, len, mean, st);
            });
          },
          s.adaptive, s.sync, s.b1_small, st != nullptr, s.coupled || s.decoupled);
    });
  });
  fold_stats(out, tasks, per_task);
}

}  // namespace rangerlab_kernels
