// Fused CPU optimizer steps for rangerlab (see rangerlab/fused/__init__.py for the design note).
//
// Each kernel streams a bucket's weights, gradients and state once (twice where a per-tensor norm
// must be known before the update: LARS and the LAMB trust ratio), split into row-aligned chunks
// that run in parallel on ATen's thread pool. Gradient Centralization is done row by row: a row's
// mean is taken while the row is still in cache, so it costs no extra trip to memory. The maths
// follows rangerlab's reference transforms operation by operation (same order, torch's lerp
// formula), so the fast path agrees with the reference path to rounding.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

using at::Tensor;

constexpr int64_t kChunk = 1 << 15;  // elements per parallel task

// Elements [begin, end) of tensor `index`. `row` is the length of what GC centralizes
// (numel / size(0) for a tensor with dim() > 1 when gc is on; tasks then hold whole rows), or 0.
struct Task {
  int64_t index, begin, end, row;
};

std::vector<Task> make_tasks(at::TensorList params, bool gc) {
  std::vector<Task> tasks;
  for (int64_t i = 0; i < static_cast<int64_t>(params.size()); ++i) {
    const int64_t n = params[i].numel();
    if (n == 0) continue;
    const int64_t row = (gc && params[i].dim() > 1) ? n / params[i].size(0) : 0;
    const int64_t step = row == 0 ? kChunk : std::max<int64_t>(1, kChunk / row) * row;
    for (int64_t b = 0; b < n; b += step) tasks.push_back({i, b, std::min(n, b + step), row});
  }
  return tasks;
}

template <typename F>
void run(const std::vector<Task>& tasks, const F& body, int64_t from = 0, int64_t to = -1) {
  to = to < 0 ? static_cast<int64_t>(tasks.size()) : to;
  at::parallel_for(from, to, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) body(t, tasks[t]);
  });
}

// Partial sums in SIMD registers of the data type (GCC/Clang vector extensions: the compiler will
// not reorder a scalar floating-point sum itself without -ffast-math) over short spans, each
// span's lanes then added into a double, so the rounding error stays that of a short sum
// whatever the tensor's size.
constexpr int64_t kSpan = 256;

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);

template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline double lanes_total(const Vec<T>& acc) {
  double total = 0.0;
  for (int64_t k = 0; k < kLanes<T>; ++k) total += static_cast<double>(acc[k]);
  return total;
}

// Sum of squares of x[b, stop) (the span's tail is summed as scalars).
template <typename T>
inline double span_sq(const T* __restrict__ x, int64_t b, int64_t stop, T shift = T(0)) {
  Vec<T> acc = {};
  T tail = 0;
  int64_t j = b;
  for (; j + kLanes<T> <= stop; j += kLanes<T>) {
    const Vec<T> y = load<T>(x + j) - shift;
    acc += y * y;
  }
  for (; j < stop; ++j) tail += (x[j] - shift) * (x[j] - shift);
  return lanes_total<T>(acc) + static_cast<double>(tail);
}

// Sum (or sum of squares) of x[0, len) - shift.
template <typename T, bool kSquare>
inline double lane_sum(const T* __restrict__ x, int64_t len, T shift = T(0)) {
  double total = 0.0;
  for (int64_t b = 0; b < len; b += kSpan) {
    const int64_t stop = std::min(len, b + kSpan);
    if constexpr (kSquare) {
      total += span_sq(x, b, stop, shift);
    } else {
      Vec<T> acc = {};
      T tail = 0;
      int64_t j = b;
      for (; j + kLanes<T> <= stop; j += kLanes<T>) acc += load<T>(x + j) - shift;
      for (; j < stop; ++j) tail += x[j] - shift;
      total += lanes_total<T>(acc) + static_cast<double>(tail);
    }
  }
  return total;
}

// Calls row_fn(begin, length, mean) for every centralization row of the task (one span with
// mean 0 when the tensor is not centralized).
template <typename T, typename F>
inline void for_rows(const Task& task, const T* g, bool centralize, const F& row_fn) {
  if (!centralize || task.row == 0) {
    row_fn(task.begin, task.end - task.begin, T(0));
    return;
  }
  for (int64_t r = task.begin; r < task.end; r += task.row) {
    const int64_t len = std::min(task.end, r + task.row) - r;
    row_fn(r, len, static_cast<T>(lane_sum<T, false>(g + r, len) / static_cast<double>(task.row)));
  }
}

void check_lists(std::initializer_list<at::TensorList> lists, int64_t n) {
  for (const auto& l : lists) {
    TORCH_CHECK(static_cast<int64_t>(l.size()) == n, "rangerlab fused: list lengths differ");
    for (const auto& t : l) {
      TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(),
                  "rangerlab fused: tensors must be contiguous CPU tensors");
    }
  }
}

// Per-tensor constants of the Adam family, passed by value so that the inner loops see plain
// locals (through a reference the compiler must assume a store to w may change them).
template <typename T>
struct AdamArgs {
  T b1w, b2, b2w, eps, wd_in, wd_out, a, d, neg_lr, alpha;
  bool b1_small, alpha_small, coupled, decoupled, adaptive, sync;
};

// The loops below copy every constant into a local first (the compiler keeps locals in
// registers, struct members it must reload), and the flags that change the loop's body are
// template parameters, so that each variant vectorizes. Weight decay that is off is a 0 factor:
// adding 0 * w is exact.
#define RANGERLAB_ADAM_LOCALS(s)                                                          \
  const T b1w = s.b1w, b1r = T(1) - s.b1w, b2 = s.b2, b2w = s.b2w, eps = s.eps;           \
  const T wd_in = s.coupled ? s.wd_in : T(0), wd_out = s.decoupled ? s.wd_out : T(0);     \
  const T a = s.a, d = s.d, neg_lr = s.neg_lr, alpha = s.alpha, alpha_r = T(1) - s.alpha; \
  const bool alpha_small = s.alpha_small

// Adam's moments (torch's lerp for m), for element j.
#define RANGERLAB_ADAM_MOMENTS(gj, wj, mj, vj)                                            \
  {                                                                                       \
    const T g_ = (gj) + wd_in * (wj);                                                     \
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
    u = (a * (mj)) / (std::sqrt(vj) / d + eps) + wd_out * (wj);                           \
  } else {                                                                                \
    u = (mj) * a + wd_out * (wj);                                                         \
  }
// Lookahead: slow <- lerp(slow, w, alpha) (torch's lerp), w <- slow.
#define RANGERLAB_SYNC(wj, sj)                                                            \
  if constexpr (kSync) {                                                                  \
    sj = alpha_small ? sj + alpha * (wj - sj) : wj - (wj - sj) * alpha_r;                 \
    wj = sj;                                                                              \
  }

// Calls f(bool_constant<x>, bool_constant<y>, bool_constant<z>): runtime flags to templates.
template <typename F>
void with_flags(bool x, bool y, bool z, const F& f) {
  using Y = std::true_type;
  using N = std::false_type;
  auto inner = [&](auto X) {
    if (y) {
      z ? f(X, Y{}, Y{}) : f(X, Y{}, N{});
    } else {
      z ? f(X, N{}, Y{}) : f(X, N{}, N{});
    }
  };
  x ? inner(Y{}) : inner(N{});
}

// One pass: moments, direction, w -= lr * u, and the Lookahead sync on sync steps.
template <typename T, bool kAdaptive, bool kSync, bool kSmall>
void adam_row(const AdamArgs<T>& s, T* __restrict__ w, const T* __restrict__ g,
              T* __restrict__ m, T* __restrict__ v, T* __restrict__ slow, int64_t len, T mean) {
  RANGERLAB_ADAM_LOCALS(s);
  for (int64_t j = 0; j < len; ++j) {
    RANGERLAB_ADAM_MOMENTS(g[j] - mean, w[j], m[j], v[j]);
    RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);
    w[j] = w[j] + neg_lr * u;
    RANGERLAB_SYNC(w[j], slow[j]);
  }
}

// Trust-ratio pass 1: moments, and the squared norms of the direction and of the weights.
template <typename T, bool kAdaptive, bool kSmall>
void adam_norms_row(const AdamArgs<T>& s, const T* __restrict__ w, const T* __restrict__ g,
                    T* __restrict__ m, T* __restrict__ v, int64_t len, T mean, double& u_sq,
                    double& w_sq) {
  RANGERLAB_ADAM_LOCALS(s);
  (void)alpha, (void)alpha_r, (void)alpha_small, (void)neg_lr;
  // Spans short enough that m, v, w and the directions stay in L1 between the loops.
  T u[kSpan];
  for (int64_t b = 0; b < len; b += kSpan) {
    const int64_t stop = std::min(len, b + kSpan);
    for (int64_t j = b; j < stop; ++j) {
      RANGERLAB_ADAM_MOMENTS(g[j] - mean, w[j], m[j], v[j]);
      RANGERLAB_ADAM_DIRECTION(uj, w[j], m[j], v[j]);
      u[j - b] = uj;
    }
    u_sq += span_sq(u, 0, stop - b);
    w_sq += span_sq(w, b, stop);
  }
}

// Trust-ratio pass 2: w -= lr * r * u from the stored moments, and the sync.
template <typename T, bool kAdaptive, bool kSync>
void adam_apply_row(const AdamArgs<T>& s, T r, T* __restrict__ w, const T* __restrict__ m,
                    const T* __restrict__ v, T* __restrict__ slow, int64_t len) {
  RANGERLAB_ADAM_LOCALS(s);
  (void)b1w, (void)b1r, (void)b2, (void)b2w, (void)wd_in;
  for (int64_t j = 0; j < len; ++j) {
    RANGERLAB_ADAM_DIRECTION(u, w[j], m[j], v[j]);
    w[j] = w[j] + neg_lr * (u * r);
    RANGERLAB_SYNC(w[j], slow[j]);
  }
}

// Adam family: Adam/AdamW, RAdam, Ranger (+ Lookahead sync). Per tensor i the direction is
//   u = a_i * m / (sqrt(v) / d_i + eps)   (adaptive_i)   or   u = a_i * m   (RAdam's first steps)
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
  s.wd_in = T(c.weight_decay), s.wd_out = T(c.weight_decay), s.a = T(a), s.d = T(d);
  s.neg_lr = T(-lr), s.alpha = T(alpha);
  s.b1_small = std::abs(1 - c.beta1) < 0.5, s.alpha_small = std::abs(alpha) < 0.5;
  s.coupled = !c.decoupled && c.weight_decay != 0;
  s.decoupled = c.decoupled && c.weight_decay != 0;
  s.adaptive = adaptive != 0, s.sync = sync;
  return s;
}

// One pass: moments, direction, w -= lr * u, and the Lookahead sync on sync steps.
void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList slows, at::ArrayRef<double> a,
               at::ArrayRef<double> d, at::ArrayRef<int64_t> adaptive, double lr, double beta1,
               double beta2, double eps, double weight_decay, bool decoupled, bool gc, bool sync,
               double alpha) {
  const int64_t n = params.size();
  check_lists({grads, exp_avgs, exp_avg_sqs}, n);
  if (sync) check_lists({slows}, n);
  if (n == 0) return;
  const auto tasks = make_tasks(params, gc);
  const AdamConfig c{beta1, beta2, eps, weight_decay, decoupled};
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_adam_step", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t, const Task& task) {
      const int64_t i = task.index;
      const AdamArgs<T> s = adam_args<T>(c, a[i], d[i], adaptive[i], lr, sync, alpha);
      T* w = params[i].data_ptr<T>();
      const T* g = grads[i].data_ptr<T>();
      T* m = exp_avgs[i].data_ptr<T>();
      T* v = exp_avg_sqs[i].data_ptr<T>();
      T* slow = sync ? slows[i].data_ptr<T>() : nullptr;
      with_flags(s.adaptive, s.sync, s.b1_small, [&](auto A, auto S, auto B) {
        for_rows(task, g, gc, [&](int64_t b, int64_t len, T mean) {
          adam_row<T, A(), S(), B()>(s, w + b, g + b, m + b, v + b, slow ? slow + b : nullptr,
                                     len, mean);
        });
      });
    });
  });
}

// Trust-ratio pass 1 (LAMB, Ranger-LARS): the moments, and per tensor the squared norms of the
// weights and of the direction, returned as a float64 (n, 2) tensor. The caller turns them into
// ratios (lamb_ratio), summing them over ranks first for sharded tensors.
Tensor adam_trust_norms(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                        at::TensorList exp_avg_sqs, at::ArrayRef<double> a, at::ArrayRef<double> d,
                        at::ArrayRef<int64_t> adaptive, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled, bool gc) {
  const int64_t n = params.size();
  check_lists({grads, exp_avgs, exp_avg_sqs}, n);
  Tensor out = at::zeros({n, 2}, at::kDouble);
  if (n == 0) return out;
  const auto tasks = make_tasks(params, gc);
  std::vector<double> u_sq(tasks.size(), 0.0), w_sq(tasks.size(), 0.0);
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
      with_flags(s.adaptive, s.b1_small, false, [&](auto A, auto B, auto) {
        for_rows(task, g, gc, [&](int64_t b, int64_t len, T mean) {
          adam_norms_row<T, A(), B()>(s, w + b, g + b, m + b, v + b, len, mean, u_sq[t],
                                      w_sq[t]);
        });
      });
    });
  });
  // Task order is fixed, so the sums are deterministic.
  double* o = out.data_ptr<double>();
  for (size_t t = 0; t < tasks.size(); ++t) {
    o[2 * tasks[t].index] += w_sq[t];
    o[2 * tasks[t].index + 1] += u_sq[t];
  }
  return out;
}

// Trust-ratio pass 2: w -= lr * r_i * u from the stored moments, and the sync.
void adam_trust_apply(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                      at::TensorList slows, at::ArrayRef<double> a, at::ArrayRef<double> d,
                      at::ArrayRef<int64_t> adaptive, at::ArrayRef<double> ratios, double lr,
                      double eps, double weight_decay, bool decoupled, bool sync, double alpha) {
  const int64_t n = params.size();
  check_lists({exp_avgs, exp_avg_sqs}, n);
  if (sync) check_lists({slows}, n);
  if (n == 0) return;
  const auto tasks = make_tasks(params, false);
  const AdamConfig c{0.0, 0.0, eps, weight_decay, decoupled};
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_adam_trust_apply", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t, const Task& task) {
      const int64_t i = task.index;
      T* slow = sync ? slows[i].data_ptr<T>() : nullptr;
      const AdamArgs<T> s = adam_args<T>(c, a[i], d[i], adaptive[i], lr, sync, alpha);
      with_flags(s.adaptive, s.sync, false, [&](auto A, auto S, auto) {
        adam_apply_row<T, A(), S()>(s, T(ratios[i]), params[i].data_ptr<T>() + task.begin,
                                    exp_avgs[i].data_ptr<T>() + task.begin,
                                    exp_avg_sqs[i].data_ptr<T>() + task.begin,
                                    slow ? slow + task.begin : nullptr, task.end - task.begin);
      });
    });
  });
}

template <typename T>
struct SgdArgs {
  T wd, mu, keep, neg_lr, r;
  bool decay, momentum, first, nesterov;
};

// d = r * (g - mean + wd * w); torch-SGD momentum; w -= lr * (v or d + mu v). Decay that is
// off is a 0 factor and a missing trust ratio a factor 1, both exact.
template <typename T, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_row(const SgdArgs<T>& s, T* __restrict__ w, const T* __restrict__ g, T* __restrict__ v,
             int64_t len, T mean) {
  const T wd = s.decay ? s.wd : T(0), mu = s.mu, keep = s.keep, neg_lr = s.neg_lr, r = s.r;
  for (int64_t j = 0; j < len; ++j) {
    T dj = ((g[j] - mean) + wd * w[j]) * r;
    if constexpr (kMomentum) {
      v[j] = kFirst ? dj : v[j] * mu + keep * dj;
      dj = kNesterov ? dj + mu * v[j] : v[j];
    }
    w[j] = w[j] + neg_lr * dj;
  }
}

// Both squared norms in one sweep (two streams in one loop, read once each), in the same short
// spans and lane order as lane_sum, so the rounding is that of two separate lane_sum calls.
template <typename T>
void sq_norms_row(const T* __restrict__ w, const T* __restrict__ g, int64_t len, T mean,
                  double& g_sq, double& w_sq) {
  for (int64_t b = 0; b < len; b += kSpan) {
    const int64_t stop = std::min(len, b + kSpan);
    Vec<T> g_acc = {}, w_acc = {};
    T g_tail = 0, w_tail = 0;
    int64_t j = b;
    for (; j + kLanes<T> <= stop; j += kLanes<T>) {
      const Vec<T> y = load<T>(g + j) - mean;
      const Vec<T> x = load<T>(w + j);
      g_acc += y * y;
      w_acc += x * x;
    }
    for (; j < stop; ++j) {
      g_tail += (g[j] - mean) * (g[j] - mean);
      w_tail += w[j] * w[j];
    }
    g_sq += lanes_total<T>(g_acc) + static_cast<double>(g_tail);
    w_sq += lanes_total<T>(w_acc) + static_cast<double>(w_tail);
  }
}

// LARS/LARC pass 1: per tensor the squared norms of the weights and of the (centralized)
// gradient, as a float64 (n, 2) tensor. The caller turns them into ratios (lars_ratio).
Tensor sgd_trust_norms(at::TensorList params, at::TensorList grads, bool gc) {
  const int64_t n = params.size();
  check_lists({grads}, n);
  Tensor out = at::zeros({n, 2}, at::kDouble);
  if (n == 0) return out;
  const auto tasks = make_tasks(params, gc);
  std::vector<double> g_sq(tasks.size(), 0.0), w_sq(tasks.size(), 0.0);
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_sgd_trust_norms", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t t, const Task& task) {
      const T* g = grads[task.index].data_ptr<T>();
      const T* w = params[task.index].data_ptr<T>();
      for_rows(task, g, gc, [&](int64_t b, int64_t len, T mean) {
        sq_norms_row(w + b, g + b, len, mean, g_sq[t], w_sq[t]);
      });
    });
  });
  double* o = out.data_ptr<double>();
  for (size_t t = 0; t < tasks.size(); ++t) {
    o[2 * tasks[t].index] += w_sq[t];
    o[2 * tasks[t].index + 1] += g_sq[t];
  }
  return out;
}

// SGD and LARS/LARC: d = r_i * (g + wd * w), torch-SGD momentum, w -= lr * (v or d + mu v).
// fresh_i marks a momentum buffer that is written for the first time (v = d); `ratios` holds
// the trust ratios (empty: no ratio).
void sgd_step(at::TensorList params, at::TensorList grads, at::TensorList bufs,
              at::ArrayRef<int64_t> fresh, at::ArrayRef<double> ratios, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov, bool gc) {
  const int64_t n = params.size();
  check_lists({grads}, n);
  const bool has_momentum = momentum != 0;
  if (has_momentum) check_lists({bufs}, n);
  TORCH_CHECK(ratios.empty() || static_cast<int64_t>(ratios.size()) == n,
              "rangerlab fused: list lengths differ");
  if (n == 0) return;
  const auto tasks = make_tasks(params, gc);
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_sgd_step", [&] {
    using T = scalar_t;
    run(tasks, [&](int64_t, const Task& task) {
      const int64_t i = task.index;
      SgdArgs<T> s;
      s.wd = T(weight_decay), s.mu = T(momentum), s.keep = T(1 - dampening), s.neg_lr = T(-lr);
      s.r = ratios.empty() ? T(1) : T(ratios[i]), s.decay = weight_decay != 0;
      s.momentum = has_momentum, s.first = has_momentum && fresh[i] != 0, s.nesterov = nesterov;
      T* w = params[i].data_ptr<T>();
      const T* g = grads[i].data_ptr<T>();
      T* v = has_momentum ? bufs[i].data_ptr<T>() : nullptr;
      with_flags(s.momentum, s.first, s.nesterov, [&](auto M, auto F, auto N) {
        for_rows(task, g, gc, [&](int64_t b, int64_t len, T mean) {
          sgd_row<T, M(), F(), N()>(s, w + b, g + b, v ? v + b : nullptr, len, mean);
        });
      });
    });
  });
}

}  // namespace

TORCH_LIBRARY(rangerlab_fused, m) {
  m.def(
      "adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] slows, float[] a, float[] d, int[] adaptive, "
      "float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled, "
      "bool gc, bool sync, float alpha) -> ()");
  m.def(
      "adam_trust_norms(Tensor[] params, Tensor[] grads, Tensor(a!)[] exp_avgs, "
      "Tensor(b!)[] exp_avg_sqs, float[] a, float[] d, int[] adaptive, float beta1, "
      "float beta2, float eps, float weight_decay, bool decoupled, bool gc) -> Tensor");
  m.def(
      "adam_trust_apply(Tensor(a!)[] params, Tensor[] exp_avgs, Tensor[] exp_avg_sqs, "
      "Tensor(b!)[] slows, float[] a, float[] d, int[] adaptive, float[] ratios, float lr, "
      "float eps, float weight_decay, bool decoupled, bool sync, float alpha) -> ()");
  m.def("sgd_trust_norms(Tensor[] params, Tensor[] grads, bool gc) -> Tensor");
  m.def(
      "sgd_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] bufs, int[] fresh, "
      "float[] ratios, float lr, float momentum, float dampening, float weight_decay, "
      "bool nesterov, bool gc) -> ()");
}

TORCH_LIBRARY_IMPL(rangerlab_fused, CPU, m) {
  m.impl("adam_step", adam_step);
  m.impl("adam_trust_norms", adam_trust_norms);
  m.impl("adam_trust_apply", adam_trust_apply);
  m.impl("sgd_trust_norms", sgd_trust_norms);
  m.impl("sgd_step", sgd_step);
}
