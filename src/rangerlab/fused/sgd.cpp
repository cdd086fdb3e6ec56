// SGD, LARS and LARC, the step counters, and the operators' schemas and registration (here
// rather than in a file of their own: each file costs seconds of header parsing in the build).

#include <torch/library.h>

#include "kernels.h"

namespace rangerlab_kernels {
namespace {

template <typename T>
struct SgdArgs {
  T wd, mu, keep, neg_lr, r;
  bool decay, momentum, first, nesterov;
};

// d = r * (g - mean + wd * w); torch-SGD momentum; w -= lr * (v or d + mu v). Decay that is
// off has no term (kDecay; as in torch, a weight of inf or NaN then leaves the update finite) and
// a missing trust ratio is a factor 1 (exact).
template <typename T, bool kMomentum, bool kFirst, bool kNesterov, bool kStats, bool kDecay>
void sgd_row(const SgdArgs<T>& s, T* __restrict__ w, const T* __restrict__ g, T* __restrict__ v,
             int64_t len, T mean, TaskStats* st) {
  const T wd = s.wd, mu = s.mu, keep = s.keep, neg_lr = s.neg_lr, r = s.r;
#define RANGERLAB_SGD_DIRECTION(j)                                 \
  T dj = (kDecay ? (g[j] - mean) + wd * w[j] : (g[j] - mean)) * r; \
  if constexpr (kMomentum) {                                       \
    v[j] = kFirst ? dj : v[j] * mu + keep * dj;                    \
    dj = kNesterov ? dj + mu * v[j] : v[j];                        \
  }
  if constexpr (!kStats) {
    for (int64_t j = 0; j < len; ++j) {
      RANGERLAB_SGD_DIRECTION(j);
      w[j] = w[j] + neg_lr * dj;
    }
  } else {
    for (int64_t b = 0; b < len; b += kStatSpan) {
      const int64_t stop = std::min(len, b + kStatSpan);
      T sw = 0, sg = 0, su = 0;
#pragma omp simd reduction(+ : sw, sg, su)
      for (int64_t j = b; j < stop; ++j) {
        sw += w[j] * w[j];
        sg += g[j] * g[j];
        RANGERLAB_SGD_DIRECTION(j);
        su += dj * dj;
        w[j] = w[j] + neg_lr * dj;
      }
      st->w_sq += sw, st->g_sq += sg, st->u_sq += su;
    }
  }
#undef RANGERLAB_SGD_DIRECTION
}

// Both squared norms in one sweep (two streams in one loop, read once each), in short spans,
// each sum in two accumulators (as span_sq, so the additions are not one dependent chain).
template <typename T>
void sq_norms_row(const T* __restrict__ w, const T* __restrict__ g, int64_t len, T mean,
                  double& g_sq, double& w_sq) {
  for (int64_t b = 0; b < len; b += kSpan) {
    const int64_t stop = std::min(len, b + kSpan);
    Vec<T> g0 = {}, g1 = {}, w0 = {}, w1 = {};
    T g_tail = 0, w_tail = 0;
    int64_t j = b;
    for (; j + 2 * kLanes<T> <= stop; j += 2 * kLanes<T>) {
      const Vec<T> y0 = load<T>(g + j) - mean, y1 = load<T>(g + j + kLanes<T>) - mean;
      const Vec<T> x0 = load<T>(w + j), x1 = load<T>(w + j + kLanes<T>);
      g0 += y0 * y0, g1 += y1 * y1, w0 += x0 * x0, w1 += x1 * x1;
    }
    for (; j + kLanes<T> <= stop; j += kLanes<T>) {
      const Vec<T> y = load<T>(g + j) - mean;
      const Vec<T> x = load<T>(w + j);
      g0 += y * y, w0 += x * x;
    }
    for (; j < stop; ++j) {
      g_tail += (g[j] - mean) * (g[j] - mean);
      w_tail += w[j] * w[j];
    }
    g_sq += lanes_total<T>(g0 + g1) + static_cast<double>(g_tail);
    w_sq += lanes_total<T>(w0 + w1) + static_cast<double>(w_tail);
  }
}

}  // namespace

// LARS/LARC pass 1: per tensor the squared norms of the weights and of the (centralized)
// gradient, as a float64 (n, 2) tensor. The caller turns them into ratios (lars_ratio).
Tensor sgd_trust_norms(at::TensorList params, at::TensorList grads, bool gc) {
  const int64_t n = params.size();
  check_lists({grads}, n);
  Tensor out = at::zeros({n, 2}, at::kDouble);
  if (n == 0) return out;
  const auto tasks = make_tasks(params, gc);
  std::vector<TaskStats> per_task(tasks.size());  // a cache line per task (TaskStats)
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_sgd_trust_norms", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t t, const Task& task) {
      const T* g = grads[task.index].data_ptr<T>();
      const T* w = params[task.index].data_ptr<T>();
      for_rows<false>(task, g, gc, nullptr, [&](int64_t b, int64_t len, T mean) {
        sq_norms_row(w + b, g + b, len, mean, per_task[t].g_sq, per_task[t].w_sq);
      });
    });
  });
  double* o = out.data_ptr<double>();
  for (size_t t = 0; t < tasks.size(); ++t) {
    o[2 * tasks[t].index] += per_task[t].w_sq;
    o[2 * tasks[t].index + 1] += per_task[t].g_sq;
  }
  return out;
}

// SGD and LARS/LARC: d = r_i * (g + wd * w), torch-SGD momentum, w -= lr * (v or d + mu v).
// fresh_i marks a momentum buffer that is written for the first time (v = d); `ratios` holds
// the trust ratios (empty: no ratio). With `stats` (telemetry) every column but the ratio is
// filled in the same pass.
void sgd_step(at::TensorList params, at::TensorList grads, at::TensorList bufs,
              at::ArrayRef<int64_t> fresh, at::ArrayRef<double> ratios, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov, bool gc,
              const std::optional<Tensor>& stats) {
  const int64_t n = params.size();
  check_lists({grads}, n);
  const bool has_momentum = momentum != 0;
  if (has_momentum) check_lists({bufs}, n);
  TORCH_CHECK(ratios.empty() || static_cast<int64_t>(ratios.size()) == n,
              "rangerlab fused: list lengths differ");
  double* out = stats_rows(stats, n);
  if (n == 0) return;
  const auto tasks = make_tasks(params, gc);
  std::vector<TaskStats> per_task(out != nullptr ? tasks.size() : 0);
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_sgd_step", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t t, const Task& task) {
      const int64_t i = task.index;
      SgdArgs<T> s;
      s.wd = T(weight_decay), s.mu = T(momentum), s.keep = T(1 - dampening), s.neg_lr = T(-lr);
      s.r = ratios.empty() ? T(1) : T(ratios[i]), s.decay = weight_decay != 0;
      s.momentum = has_momentum, s.first = has_momentum && fresh[i] != 0, s.nesterov = nesterov;
      T* w = params[i].data_ptr<T>();
      const T* g = grads[i].data_ptr<T>();
      T* v = has_momentum ? bufs[i].data_ptr<T>() : nullptr;
      TaskStats* st = out != nullptr ? &per_task[t] : nullptr;
      with_flags(
          [&](auto M, auto F, auto N, auto R, auto D) {
            for_rows<R()>(task, g, gc, st, [&](int64_t b, int64_t len, T mean) {
              sgd_row<T, M(), F(), N(), R(), D()>(s, w + b, g + b, v ? v + b : nullptr, len,
                                                  mean, st);
            });
          },
          s.momentum, s.first, s.nesterov, st != nullptr, s.decay);
    });
  });
  fold_stats(out, tasks, per_task);
}

// Adds 1 to each step counter in place and returns the new counts, each truncated to an integer
// as Python's int(t) does. One call for a bucket's counters instead of torch._foreach_add_ (which
// on the CPU adds tensor by tensor, about 4 us each: 0.23 ms of every step of ResNet-18's 62
// tensors, 7 ms of a step of 2,000) and a stack and tolist to read them. It takes the counters
// torch.optim keeps (one-element float32 or float64 CPU tensors); where any counter is another
// kind, it changes nothing and returns an empty list, and the caller takes torch's path.
std::vector<int64_t> advance_steps(at::TensorList steps) {
  std::vector<int64_t> counts;
  for (const auto& t : steps) {
    const auto type = t.scalar_type();
    if (!t.device().is_cpu() || t.numel() != 1 || (type != at::kFloat && type != at::kDouble)) {
      return counts;
    }
  }
  counts.reserve(steps.size());
  for (const auto& t : steps) {
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "rangerlab_advance_steps", [&] {
      scalar_t* p = t.data_ptr<scalar_t>();
      const scalar_t next = *p + scalar_t(1);
      TORCH_CHECK(std::isfinite(next) && std::abs(next) < 9e18,
                  "rangerlab fused: a step counter is not a finite count");
      *p = next;
      counts.push_back(static_cast<int64_t>(next));
    });
  }
  return counts;
}

}  // namespace rangerlab_kernels

using namespace rangerlab_kernels;

TORCH_LIBRARY(rangerlab_fused, m) {
  m.def(
      "adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] slows, float[] a, float[] d, int[] adaptive, "
      "float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled, "
      "bool gc, bool sync, float alpha, Tensor(s!)? stats=None) -> ()");
  m.def(
      "adam_trust_norms(Tensor[] params, Tensor[] grads, Tensor(a!)[] exp_avgs, "
      "Tensor(b!)[] exp_avg_sqs, float[] a, float[] d, int[] adaptive, float beta1, "
      "float beta2, float eps, float weight_decay, bool decoupled, bool gc, "
      "Tensor(s!)? stats=None) -> Tensor");
  m.def(
      "adam_trust_apply(Tensor(a!)[] params, Tensor[] exp_avgs, Tensor[] exp_avg_sqs, "
      "Tensor(b!)[] slows, float[] a, float[] d, int[] adaptive, float[] ratios, float lr, "
      "float eps, float weight_decay, bool decoupled, bool sync, float alpha, "
      "Tensor(s!)? stats=None) -> ()");
  m.def("sgd_trust_norms(Tensor[] params, Tensor[] grads, bool gc) -> Tensor");
  m.def("advance_steps(Tensor(a!)[] steps) -> int[]");
  m.def(
      "sgd_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] bufs, int[] fresh, "
      "float[] ratios, float lr, float momentum, float dampening, float weight_decay, "
      "bool nesterov, bool gc, Tensor(s!)? stats=None) -> ()");
}

TORCH_LIBRARY_IMPL(rangerlab_fused, CPU, m) {
  m.impl("adam_step", adam_step);
  m.impl("adam_trust_norms", adam_trust_norms);
  m.impl("adam_trust_apply", adam_trust_apply);
  m.impl("sgd_trust_norms", sgd_trust_norms);
  m.impl("sgd_step", sgd_step);
  m.impl("advance_steps", advance_steps);
}
