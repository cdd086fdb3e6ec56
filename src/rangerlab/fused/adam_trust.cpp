// The Adam family's two-pass step with a trust ratio (LAMB, Ranger-LARS).

#include "adam.h"

namespace rangerlab_kernels {
namespace {

// Trust-ratio pass 1: moments, and the squared norms of the direction and of the weights.
template <typename T, bool kAdaptive, bool kSmall, bool kStats, bool kDecay>
void adam_norms_row(const AdamArgs<T>& s, const T* __restrict__ w, const T* __restrict__ g,
                    T* __restrict__ m, T* __restrict__ v, int64_t len, double& u_sq,
                    double& w_sq, TaskStats* st) {
  RANGERLAB_ADAM_LOCALS(s);
  (void)alpha, (void)alpha_r, (void)alpha_small, (void)neg_lr;
  // Spans short enough that m, v, w and the directions stay in L1 between the loops.
  T u[kSpan];
  for (int64_t b = 0; b < len; b += kSpan) {
    const int64_t stop = std::min(len, b + kSpan);
    if constexpr (!kStats) {
      for (int64_t j = b; j < stop; ++j) {
        RANGERLAB_ADAM_MOMENTS(g[j], w[j], m[j], v[j]);
        RANGERLAB_ADAM_DIRECTION(uj, w[j], m[j], v[j]);
        u[j - b] = uj;
      }
    } else {
      T sg = 0, sq = 0, sq2 = 0, shift = 0;
      if constexpr (kAdaptive) shift = factor_shift(st, s, w[b], g[b], v[b]);
#pragma omp simd reduction(+ : sg, sq, sq2)
      for (int64_t j = b; j < stop; ++j) {
        sg += g[j] * g[j];
        RANGERLAB_ADAM_MOMENTS(g[j], w[j], m[j], v[j]);
        RANGERLAB_ADAM_DIRECTION(uj, w[j], m[j], v[j]);
        u[j - b] = uj;
        if constexpr (kAdaptive) {
          const T q = RANGERLAB_ADAM_FACTOR(v[j]) - shift;
          sq += q, sq2 += q * q;
        }
      }
      st->g_sq += sg;
      if constexpr (kAdaptive) add_factors(st, stop - b, sq, sq2);
    }
    u_sq += span_sq(u, 0, stop - b);  // the ratio's sums: the same with and without stats
    w_sq += span_sq(w, b, stop);
  }
}

// Trust-ratio pass 1 with Gradient Centralization (for_gc_blocks): each block's moments and
// direction are an omp simd loop over its lanes, the same expressions as adam_norms_row's. The
// ratio's two sums are vectors added into u_sq and w_sq at the end of every span (the same with
// and without stats); telemetry's are carried across the task's rows, added into the task's
// doubles every kStatSpan elements.
template <typename T, bool kAdaptive, bool kSmall, bool kStats, bool kDecay>
void adam_norms_gc_task(const AdamArgs<T>& s, const Task& task, int64_t numel,
                        const T* __restrict__ w, const T* __restrict__ g, T* __restrict__ m,
                        T* __restrict__ v, double& u_sq, double& w_sq, TaskStats* st) {
  RANGERLAB_ADAM_LOCALS(s);
  (void)alpha, (void)alpha_r, (void)alpha_small, (void)neg_lr;
  constexpr int64_t L = kLanes<T>;
  Vec<T> nu = {}, nw = {}, sg = {}, sq = {}, sq2 = {};
  int64_t pending = 0;  // elements in the telemetry vectors
  T shift = 0;
  const auto flush = [&] {
    st->g_sq += lanes_total<T>(sg);
    if constexpr (kAdaptive) add_factors(st, pending, lanes_total<T>(sq), lanes_total<T>(sq2));
    sg = sq = sq2 = Vec<T>{};
    pending = 0;
  };
  // One element's moments and direction u, and its adaptive factor in q_k.
#define RANGERLAB_GC_NORMS_ELEMENT(j, u, q_k, shift)                      \
  RANGERLAB_ADAM_MOMENTS(g[j] - mean, w[j], m[j], v[j]);                  \
  RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);                          \
  if constexpr (kStats && kAdaptive) q_k = RANGERLAB_ADAM_FACTOR(v[j]) - shift;
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
          const Vec<T> gv = load<T>(g + b);
          sg += gv * gv;
        }
        T ut[L], qt[L];
#pragma omp simd
        for (int64_t k = 0; k < L; ++k) {
          RANGERLAB_GC_NORMS_ELEMENT(b + k, u, qt[k], shift_);
          ut[k] = u;
        }
        const Vec<T> uv = load<T>(ut), wv = load<T>(w + b);
        nu += uv * uv, nw += wv * wv;
        if constexpr (kStats && kAdaptive) {
          const Vec<T> qv = load<T>(qt);
          sq += qv, sq2 += qv * qv;
        }
      },
      [&](int64_t j, T mean) {
        T q0 = 0;
        RANGERLAB_GC_NORMS_ELEMENT(j, u, q0, shift);
        nu[0] += u * u, nw[0] += w[j] * w[j];
        if constexpr (kStats) sg[0] += g[j] * g[j], sq[0] += q0, sq2[0] += q0 * q0;
      },
      [&](int64_t n) {
        u_sq += lanes_total<T>(nu), w_sq += lanes_total<T>(nw);
        nu = nw = Vec<T>{};
        if constexpr (kStats) {
          pending += n;
          if (pending >= kStatSpan) flush();
        }
      });
#undef RANGERLAB_GC_NORMS_ELEMENT
  if constexpr (kStats) flush();
}

// Trust-ratio pass 2: w -= lr * r * u from the stored moments, and the sync.
template <typename T, bool kAdaptive, bool kSync, bool kStats, bool kDecay>
void adam_apply_row(const AdamArgs<T>& s, T r, T* __restrict__ w, const T* __restrict__ m,
                    const T* __restrict__ v, T* __restrict__ slow, int64_t len, TaskStats* st) {
  RANGERLAB_ADAM_LOCALS(s);
  (void)b1w, (void)b1r, (void)b2, (void)b2w, (void)wd_in;
  if constexpr (!(kStats && kSync)) {
    for (int64_t j = 0; j < len; ++j) {
      RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);
      w[j] = w[j] + neg_lr * (u * r);
      RANGERLAB_SYNC(w[j], slow[j]);
    }
  } else {  // telemetry on a sync step: ||fast - slow|| before the sync (as in adam_row)
    with_flags([&](auto alpha_is_small) {
      constexpr bool kAlphaSmall = decltype(alpha_is_small)::value;
      for (int64_t b = 0; b < len; b += kStatSpan) {
        const int64_t stop = std::min(len, b + kStatSpan);
        T sd = 0;
#pragma omp simd reduction(+ : sd)
        for (int64_t j = b; j < stop; ++j) {
          RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);
          w[j] = w[j] + neg_lr * (u * r);
          RANGERLAB_SYNC_MEASURED(w[j], slow[j], sd);
        }
        st->dist_sq += sd;
      }
    }, alpha_small);
  }
}

}  // namespace

// Trust-ratio pass 1 (LAMB, Ranger-LARS): the moments, and per tensor the squared norms of the
// weights and of the direction, returned as a float64 (n, 2) tensor. The caller turns them into
// ratios (lamb_ratio), summing them over ranks first for sharded tensors. With `stats`
// (telemetry) it also fills g_sq, the adaptive factor's moments and gc_sq, and copies the two
// norms (the caller scales u_sq by the ratio squared).
Tensor adam_trust_norms(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                        at::TensorList exp_avg_sqs, at::ArrayRef<double> a, at::ArrayRef<double> d,
                        at::ArrayRef<int64_t> adaptive, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled, bool gc,
                        const std::optional<Tensor>& stats) {
  const int64_t n = params.size();
  check_lists({grads, exp_avgs, exp_avg_sqs}, n);
  Tensor result = at::zeros({n, 2}, at::kDouble);
  double* out = stats_rows(stats, n);
  if (n == 0) return result;
  const auto tasks = make_tasks(params, gc);
  std::vector<TaskStats> per_task(tasks.size());
  const AdamConfig c{beta1, beta2, eps, weight_decay, decoupled};
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_adam_trust_norms", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t t, const Task& task) {
      const int64_t i = task.index;
      const AdamArgs<T> s = adam_args<T>(c, a[i], d[i], adaptive[i], 0.0, false, 0.0);
      const T* w = params[i].data_ptr<T>();
      const T* g = grads[i].data_ptr<T>();
      T* m = exp_avgs[i].data_ptr<T>();
      T* v = exp_avg_sqs[i].data_ptr<T>();
      TaskStats* st = &per_task[t];
      with_flags(
          [&](auto A, auto B, auto R, auto D) {
            if (gc && task.row > 0) {
              adam_norms_gc_task<T, A(), B(), R(), D()>(s, task, params[i].numel(), w, g, m, v,
                                                        st->u_sq, st->w_sq, st);
            } else {
              const int64_t b = task.begin;
              adam_norms_row<T, A(), B(), R(), D()>(s, w + b, g + b, m + b, v + b,
                                                    task.end - b, st->u_sq, st->w_sq, st);
            }
          },
          s.adaptive, s.b1_small, out != nullptr, s.coupled || s.decoupled);
    });
  });
  // Task order is fixed, so the sums are deterministic.
  double* o = result.data_ptr<double>();
  for (size_t t = 0; t < tasks.size(); ++t) {
    o[2 * tasks[t].index] += per_task[t].w_sq;
    o[2 * tasks[t].index + 1] += per_task[t].u_sq;
  }
  fold_stats(out, tasks, per_task);
  return result;
}

// Trust-ratio pass 2: w -= lr * r_i * u from the stored moments, and the sync. With `stats`
// (telemetry) it adds dist_sq on a sync step.
void adam_trust_apply(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                      at::TensorList slows, at::ArrayRef<double> a, at::ArrayRef<double> d,
                      at::ArrayRef<int64_t> adaptive, at::ArrayRef<double> ratios, double lr,
                      double eps, double weight_decay, bool decoupled, bool sync, double alpha,
                      const std::optional<Tensor>& stats) {
  const int64_t n = params.size();
  check_lists({exp_avgs, exp_avg_sqs}, n);
  if (sync) check_lists({slows}, n);
  double* out = stats_rows(stats, n);
  if (n == 0) return;
  const auto tasks = make_tasks(params, false);
  std::vector<TaskStats> per_task(out != nullptr ? tasks.size() : 0);
  const AdamConfig c{0.0, 0.0, eps, weight_decay, decoupled};
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_adam_trust_apply", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t t, const Task& task) {
      const int64_t i = task.index;
      T* slow = sync ? slows[i].data_ptr<T>() : nullptr;
      const AdamArgs<T> s = adam_args<T>(c, a[i], d[i], adaptive[i], lr, sync, alpha);
      TaskStats* st = out != nullptr ? &per_task[t] : nullptr;
      with_flags(
          [&](auto A, auto S, auto R, auto D) {
            adam_apply_row<T, A(), S(), R(), D()>(
                s, T(ratios[i]), params[i].data_ptr<T>() + task.begin,
                exp_avgs[i].data_ptr<T>() + task.begin, exp_avg_sqs[i].data_ptr<T>() + task.begin,
                slow ? slow + task.begin : nullptr, task.end - task.begin, st);
          },
          s.adaptive, s.sync, st != nullptr, s.coupled || s.decoupled);
    });
  });
  fold_stats(out, tasks, per_task);
}

}  // namespace rangerlab_kernels
