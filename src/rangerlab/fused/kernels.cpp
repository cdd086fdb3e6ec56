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
#include <vector>

namespace {

using at::Tensor;

constexpr int64_t kChunk = 1 << 15;  // elements per parallel task

// torch's lerp: exact at both ends, the same rounding as Tensor.lerp_.
template <typename T>
inline T lerp(T start, T end, T weight) {
  return std::abs(weight) < T(0.5) ? start + weight * (end - start)
                                   : end - (end - start) * (T(1) - weight);
}

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
void run(const std::vector<Task>& tasks, const F& body) {
  at::parallel_for(0, static_cast<int64_t>(tasks.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) body(t, tasks[t]);
  });
}

// Calls row_fn(begin, end, mean) for every centralization row inside the task (mean 0 if none).
template <typename T, typename F>
inline void for_rows(const Task& task, const T* g, bool centralize, const F& row_fn) {
  if (!centralize || task.row == 0) {
    row_fn(task.begin, task.end, T(0));
    return;
  }
  for (int64_t r = task.begin; r < task.end; r += task.row) {
    const int64_t stop = std::min(task.end, r + task.row);
    double sum = 0.0;
    for (int64_t j = r; j < stop; ++j) sum += static_cast<double>(g[j]);
    row_fn(r, stop, static_cast<T>(sum / static_cast<double>(task.row)));
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

// Adam family: Adam/AdamW, RAdam, Ranger (+ Lookahead sync) and, with `trust`, the LAMB trust
// ratio of Ranger-LARS. Per tensor i the direction is
//   u = a_i * m / (sqrt(v) / d_i + eps)   (adaptive_i)   or   u = a_i * m   (RAdam's first steps)
// with weight decay added to g (coupled) or to u (decoupled).
void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList slows, at::ArrayRef<double> a,
               at::ArrayRef<double> d, at::ArrayRef<int64_t> adaptive, double lr, double beta1,
               double beta2, double eps, double weight_decay, bool decoupled, bool gc,
               bool trust, double max_weight_norm, bool sync, double alpha) {
  const int64_t n = params.size();
  check_lists({grads, exp_avgs, exp_avg_sqs}, n);
  if (sync) check_lists({slows}, n);
  if (n == 0) return;
  const auto tasks = make_tasks(params, gc);
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_adam_step", [&] {
    using T = scalar_t;
    const T b1w = T(1 - beta1), b2 = T(beta2), b2w = T(1 - beta2), e = T(eps);
    const T wd = T(weight_decay), wd_in = decoupled ? T(0) : wd, wd_out = decoupled ? wd : T(0);
    const bool coupled = !decoupled && weight_decay != 0, uncoupled = decoupled && weight_decay != 0;
    // The update direction at element j, from the already advanced moments.
    auto direction = [&](int64_t i, const T* w, const T* m, const T* v, int64_t j) {
      T u = adaptive[i] ? (T(a[i]) * m[j]) / (std::sqrt(v[j]) / T(d[i]) + e) : m[j] * T(a[i]);
      if (uncoupled) u = u + wd_out * w[j];
      return u;
    };
    auto moments = [&](int64_t i, const Task& task, T* m, T* v, const T* g, const T* w) {
      for_rows(task, g, gc, [&](int64_t b, int64_t end, T mean) {
        for (int64_t j = b; j < end; ++j) {
          T gj = g[j] - mean;
          if (coupled) gj = gj + wd_in * w[j];
          m[j] = lerp(m[j], gj, b1w);
          v[j] = v[j] * b2 + b2w * gj * gj;
        }
      });
    };
    std::vector<double> u_sq(trust ? tasks.size() : 0), w_sq(trust ? tasks.size() : 0);
    std::vector<T> ratio(n, T(1));
    if (trust) {
      run(tasks, [&](int64_t t, const Task& task) {
        const int64_t i = task.index;
        T* m = exp_avgs[i].data_ptr<T>();
        T* v = exp_avg_sqs[i].data_ptr<T>();
        const T* w = params[i].data_ptr<T>();
        moments(i, task, m, v, grads[i].data_ptr<T>(), w);
        double su = 0.0, sw = 0.0;
        for (int64_t j = task.begin; j < task.end; ++j) {
          const T u = direction(i, w, m, v, j);
          su += static_cast<double>(u) * u;
          sw += static_cast<double>(w[j]) * w[j];
        }
        u_sq[t] = su;
        w_sq[t] = sw;
      });
      std::vector<double> un(n, 0.0), wn(n, 0.0);
      for (size_t t = 0; t < tasks.size(); ++t) {
        un[tasks[t].index] += u_sq[t];
        wn[tasks[t].index] += w_sq[t];
      }
      for (int64_t i = 0; i < n; ++i) {
        const T w_norm = T(std::sqrt(wn[i])), u_norm = T(std::sqrt(un[i]));
        const T capped = max_weight_norm >= 0 ? std::min(w_norm, T(max_weight_norm)) : w_norm;
        ratio[i] = (w_norm > 0 && u_norm > 0) ? capped / u_norm : T(1);
      }
    }
    const T neg_lr = T(-lr), al = T(alpha);
    run(tasks, [&](int64_t, const Task& task) {
      const int64_t i = task.index;
      T* w = params[i].data_ptr<T>();
      T* m = exp_avgs[i].data_ptr<T>();
      T* v = exp_avg_sqs[i].data_ptr<T>();
      if (!trust) moments(i, task, m, v, grads[i].data_ptr<T>(), w);
      T* slow = sync ? slows[i].data_ptr<T>() : nullptr;
      const T r = ratio[i];
      for (int64_t j = task.begin; j < task.end; ++j) {
        T u = direction(i, w, m, v, j);
        if (trust) u = u * r;
        w[j] = w[j] + neg_lr * u;
        if (sync) {
          slow[j] = lerp(slow[j], w[j], al);
          w[j] = slow[j];
        }
      }
    });
  });
}

// SGD and LARS/LARC: d = trust * (g + wd * w), torch-SGD momentum, w -= lr * (v or d + mu v).
// fresh_i marks a momentum buffer that is written for the first time (v = d).
void sgd_step(at::TensorList params, at::TensorList grads, at::TensorList bufs,
              at::ArrayRef<int64_t> fresh, double lr, double momentum, double dampening,
              double weight_decay, bool nesterov, bool gc, bool trust, double trust_coefficient,
              double eps, bool clip) {
  const int64_t n = params.size();
  check_lists({grads}, n);
  const bool has_momentum = momentum != 0;
  if (has_momentum) check_lists({bufs}, n);
  if (n == 0) return;
  const auto tasks = make_tasks(params, gc);
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "rangerlab_sgd_step", [&] {
    using T = scalar_t;
    const T wd = T(weight_decay), mu = T(momentum), keep = T(1 - dampening), neg_lr = T(-lr);
    std::vector<T> ratio(n, T(1));
    if (trust) {
      std::vector<double> g_sq(tasks.size()), w_sq(tasks.size());
      run(tasks, [&](int64_t t, const Task& task) {
        const T* g = grads[task.index].data_ptr<T>();
        const T* w = params[task.index].data_ptr<T>();
        double sg = 0.0, sw = 0.0;
        for_rows(task, g, gc, [&](int64_t b, int64_t end, T mean) {
          for (int64_t j = b; j < end; ++j) {
            const T gj = g[j] - mean;
            sg += static_cast<double>(gj) * gj;
            sw += static_cast<double>(w[j]) * w[j];
          }
        });
        g_sq[t] = sg;
        w_sq[t] = sw;
      });
      std::vector<double> gn(n, 0.0), wn(n, 0.0);
      for (size_t t = 0; t < tasks.size(); ++t) {
        gn[tasks[t].index] += g_sq[t];
        wn[tasks[t].index] += w_sq[t];
      }
      for (int64_t i = 0; i < n; ++i) {
        const T w_norm = T(std::sqrt(wn[i])), g_norm = T(std::sqrt(gn[i]));
        T r = T(trust_coefficient) * w_norm / (g_norm + wd * w_norm + T(eps));
        if (clip) r = std::min(r / T(lr), T(1));
        ratio[i] = (w_norm > 0 && g_norm > 0) ? r : T(1);
      }
    }
    run(tasks, [&](int64_t, const Task& task) {
      const int64_t i = task.index;
      T* w = params[i].data_ptr<T>();
      const T* g = grads[i].data_ptr<T>();
      T* v = has_momentum ? bufs[i].data_ptr<T>() : nullptr;
      const bool first = has_momentum && fresh[i];
      const T r = ratio[i];
      for_rows(task, g, gc, [&](int64_t b, int64_t end, T mean) {
        for (int64_t j = b; j < end; ++j) {
          T dj = g[j] - mean;
          if (weight_decay != 0) dj = dj + wd * w[j];
          if (trust) dj = dj * r;
          if (has_momentum) {
            v[j] = first ? dj : v[j] * mu + keep * dj;
            dj = nesterov ? dj + mu * v[j] : v[j];
          }
          w[j] = w[j] + neg_lr * dj;
        }
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
      "bool gc, bool trust, float max_weight_norm, bool sync, float alpha) -> ()");
  m.def(
      "sgd_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] bufs, int[] fresh, float lr, "
      "float momentum, float dampening, float weight_decay, bool nesterov, bool gc, bool trust, "
      "float trust_coefficient, float eps, bool clip) -> ()");
}

TORCH_LIBRARY_IMPL(rangerlab_fused, CPU, m) {
  m.impl("adam_step", adam_step);
  m.impl("sgd_step", sgd_step);
}
