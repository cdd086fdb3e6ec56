// Fused CPU optimizer steps for rangerlab (see rangerlab/fused/__init__.py for the design note).
//
// Each kernel streams a bucket's weights, gradients and state once (twice where a per-tensor norm
// must be known before the update: LARS and the LAMB trust ratio), split into row-aligned chunks
// that run in parallel on ATen's thread pool. Gradient Centralization is done row by row: a row's
// mean is taken while the row is still in cache, so it costs no extra trip to memory. The maths
// follows rangerlab's reference transforms operation by operation (same order, torch's lerp
// formula), so the fast path agrees with the reference path to rounding. One exception: the
// adaptive direction is a * m times the adaptive factor 1 / (sqrt(v) / d + eps) (one rounding
// from the reference's division), because that factor is what telemetry reports, and so a
// recorded step takes its statistics for the price of two additions per element.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
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

// Runs body(t, tasks[t]) for every task on ATen's thread pool. Each thread takes the next task
// from a shared counter instead of a fixed half of the list: tasks differ in cost (GC rows, the
// short tail of a tensor, a step with telemetry's sums), and with fixed halves one thread waited
// for the other at the end of every kernel. Which thread runs a task changes nothing: a task
// writes only its own elements and its own per-task sums, folded in task order afterwards.
template <typename F>
void run(const std::vector<Task>& tasks, const F& body) {
  const int64_t n = static_cast<int64_t>(tasks.size());
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n);
  if (workers <= 1 || at::in_parallel_region()) {
    for (int64_t t = 0; t < n; ++t) body(t, tasks[t]);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < n;
         t = next.fetch_add(1, std::memory_order_relaxed)) {
      body(t, tasks[t]);
    }
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

// Sum of squares of x[b, stop) (the span's tail is summed as scalars), in four accumulators so
// that the additions are not one chain of dependent instructions.
template <typename T>
inline double span_sq(const T* __restrict__ x, int64_t b, int64_t stop) {
  Vec<T> a0 = {}, a1 = {}, a2 = {}, a3 = {};
  T tail = 0;
  int64_t j = b;
  for (; j + 4 * kLanes<T> <= stop; j += 4 * kLanes<T>) {
    const Vec<T> y0 = load<T>(x + j), y1 = load<T>(x + j + kLanes<T>);
    const Vec<T> y2 = load<T>(x + j + 2 * kLanes<T>), y3 = load<T>(x + j + 3 * kLanes<T>);
    a0 += y0 * y0, a1 += y1 * y1, a2 += y2 * y2, a3 += y3 * y3;
  }
  for (; j + kLanes<T> <= stop; j += kLanes<T>) {
    const Vec<T> y = load<T>(x + j);
    a0 += y * y;
  }
  for (; j < stop; ++j) tail += x[j] * x[j];
  return lanes_total<T>((a0 + a1) + (a2 + a3)) + static_cast<double>(tail);
}

// The sum of g[0, len) for GC's mean, in spans (kSpan) of two accumulators each (so the
// additions are not one dependent chain). Telemetry's sum of g^2 is taken in the update loop,
// with the other sums (taking it here instead measured no faster, within this machine's noise).
template <typename T>
inline double row_sum(const T* __restrict__ g, int64_t len) {
  double sum = 0;
  for (int64_t b = 0; b < len; b += kSpan) {
    const int64_t stop = std::min(len, b + kSpan);
    Vec<T> s0 = {}, s1 = {};
    T s_tail = 0;
    int64_t j = b;
    for (; j + 2 * kLanes<T> <= stop; j += 2 * kLanes<T>) {
      s0 += load<T>(g + j), s1 += load<T>(g + j + kLanes<T>);
    }
    for (; j < stop; ++j) s_tail += g[j];
    sum += lanes_total<T>(s0 + s1) + static_cast<double>(s_tail);
  }
  return sum;
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
  const T a = s.a, d = s.d, neg_lr = s.neg_lr, alpha = s.alpha, alpha_r = T(1) - s.alpha; \
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
    u = kDecay ? (a * (mj)) * (T(1) / (std::sqrt(vj) / d + eps)) + wd_out * (wj)          \
               : (a * (mj)) * (T(1) / (std::sqrt(vj) / d + eps));                         \
  } else {                                                                                \
    u = kDecay ? (mj) * a + wd_out * (wj) : (mj) * a;                                     \
  }
// Lookahead: slow <- lerp(slow, w, alpha) (torch's lerp), w <- slow.
#define RANGERLAB_SYNC(wj, sj)                                                            \
  if constexpr (kSync) {                                                                  \
    sj = alpha_small ? sj + alpha * (wj - sj) : wj - (wj - sj) * alpha_r;                 \
    wj = sj;                                                                              \
  }

// Calls f(bool_constant<flag>...) in the flags' order: runtime flags to template parameters.
template <typename F>
void with_flags(const F& f) {
  f();
}
template <typename F, typename... Rest>
void with_flags(const F& f, bool flag, Rest... rest) {
  if (flag) {
    with_flags([&](auto... later) { f(std::true_type{}, later...); }, rest...);
  } else {
    with_flags([&](auto... later) { f(std::false_type{}, later...); }, rest...);
  }
}

// Telemetry (rangerlab/fused/stats.py): count, mean and sum of squared deviations, merged with
// Chan et al.'s rule (the adaptive factor's, task by task into its tensor's row).
struct Moments {
  double n = 0, mean = 0, m2 = 0;
  void merge(double nb, double mean_b, double m2_b) {
    if (nb == 0) return;
    const double total = n + nb, delta = mean_b - mean;
    mean += delta * nb / total;
    m2 += m2_b + delta * delta * n * nb / total;
    n = total;
  }
  void merge(const Moments& o) { merge(o.n, o.mean, o.m2); }
};

// What one task adds to its tensor's row of the stats tensor. The adaptive factor's sums are
// taken about one value per task (shifted data, factor_shift), so a span adds two numbers and the
// task's moments are formed once, at the end. Each task's sums have a cache line of their own:
// neighbouring tasks run on different threads at the same time, and their sums, written at the
// end of every span or GC row, used to share lines that then bounced between the cores. Ranger's
// recorded kernel on ResNet-18's shapes, 2 threads, interleaved in one process with each task's
// sums in a local copy instead (the same effect): 1.07 -> 1.04 of the unrecorded kernel.
struct alignas(64) TaskStats {
  double w_sq = 0, g_sq = 0, u_sq = 0, gc_sq = 0, dist_sq = 0;
  double q_n = 0, q_shift = 0, q_sum = 0, q_sum_sq = 0;
  Moments moments() const {
    Moments m;
    if (q_n > 0) {
      m.merge(q_n, q_shift + q_sum / q_n, std::max(q_sum_sq - q_sum * q_sum / q_n, 0.0));
    }
    return m;
  }
};

// Elements per telemetry span. A span ends in a horizontal sum of each accumulator and its
// addition into a double, so longer spans cost less: 8,192 elements (a GC row of ResNet-18's
// layer 4, 4,608 elements, is one span; a 32,768-element task is four) measured 2-5% faster than
// 1,024 on recorded steps. That is up to 1,024 terms per lane in the data type, still accurate
// for the telemetry's single-precision sums (tested against the reference path with spans and rows longer
// than this).
constexpr int64_t kStatSpan = 8192;

// The value the task's adaptive factors are summed about (shifted data): element b's factor
// after this step's moment update, set once per task.
template <typename T, typename Args>
inline T factor_shift(TaskStats* st, const Args& s, T wb, T gb, T vb) {
  if (st->q_n == 0) {
    const T g = gb + (s.coupled ? s.wd_in : T(0)) * wb;
    st->q_shift = static_cast<double>(T(1) / (std::sqrt(vb * s.b2 + s.b2w * g * g) / s.d + s.eps));
  }
  return static_cast<T>(st->q_shift);
}

// Adds one span's shifted sums of the adaptive factor to the task's.
template <typename T>
inline void add_factors(TaskStats* st, int64_t len, T sum, T sum_sq) {
  st->q_n += static_cast<double>(len), st->q_sum += sum, st->q_sum_sq += sum_sq;
}

// Calls row_fn(begin, length, mean) for every centralization row of the task (GC on a tensor
// with dim() > 1), else once for the whole task with mean 0. With kStats (telemetry) each row
// adds its removed mean's squared norm to st.
template <bool kStats, typename T, typename F>
inline void for_rows(const Task& task, const T* g, bool centralize, TaskStats* st,
                     const F& row_fn) {
  if (!centralize || task.row == 0) {
    row_fn(task.begin, task.end - task.begin, T(0));
    return;
  }
  for (int64_t r = task.begin; r < task.end; r += task.row) {
    const int64_t len = std::min(task.end, r + task.row) - r;
    const T mean = static_cast<T>(row_sum(g + r, len) / static_cast<double>(task.row));
    if constexpr (kStats) st->gc_sq += static_cast<double>(len) * mean * mean;
    row_fn(r, len, mean);
  }
}

// Telemetry sums inside the update loops: `#pragma omp simd reduction` lets the compiler keep
// each sum in its own vector register (it may reorder those sums, and only those: the update's
// arithmetic is untouched, so the weights are bit-identical to the loop without them). Sums run
// over one span at a time in the data type, then add into doubles. The adaptive factor is
// summed about a value near the task's factors (factor_shift: shifted data), and tasks merge with
// Chan et al.'s rule, so its variance never comes from a difference of two large sums. The sum
// of g^2 is that of the gradient as given (before GC).

// The stats columns (stats.py's order) and the per-task sums folded into them in task order, so
// the result is deterministic.
enum Column { kWSq, kGSq, kUSq, kQN, kQMean, kQM2, kGcSq, kDistSq, kRatio, kColumns };

double* stats_rows(const std::optional<Tensor>& stats, int64_t n) {
  if (!stats.has_value()) return nullptr;
  const Tensor& t = *stats;
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == at::kDouble &&
                  t.dim() == 2 && t.size(0) == n && t.size(1) == kColumns,
              "rangerlab fused: stats must be a contiguous float64 CPU tensor of shape (n, 9)");
  return t.data_ptr<double>();
}

template <typename TaskList>
void fold_stats(double* out, const TaskList& tasks, const std::vector<TaskStats>& per_task) {
  if (out == nullptr) return;
  for (size_t t = 0; t < tasks.size(); ++t) {
    double* row = out + kColumns * tasks[t].index;
    const TaskStats& s = per_task[t];
    row[kWSq] += s.w_sq, row[kGSq] += s.g_sq, row[kUSq] += s.u_sq;
    row[kGcSq] += s.gc_sq, row[kDistSq] += s.dist_sq;
    if (s.q_n == 0) continue;
    Moments m{row[kQN], row[kQMean], row[kQM2]};
    m.merge(s.moments());
    row[kQN] = m.n, row[kQMean] = m.mean, row[kQM2] = m.m2;
  }
}

// With kStats the loops below run span by span (kStatSpan, or a GC row's end) with the
// sums as omp simd reductions; the update itself is the same expression as without, so the
// weights are bit-identical.

// The adaptive factor q = 1 / (sqrt(v) / d + eps) of element j (the same expression as in the
// direction, so the compiler computes it once).
#define RANGERLAB_ADAM_FACTOR(vj) (T(1) / (std::sqrt(vj) / d + eps))

// RANGERLAB_SYNC with (fast - slow)^2 added to sd first, its lerp formula chosen at compile time
// (kAlphaSmall): GCC leaves a loop with that choice made inside it unvectorized.
#define RANGERLAB_SYNC_MEASURED(wj, sj, sd)                                               \
  {                                                                                       \
    const T dj = (wj) - (sj);                                                             \
    sd += dj * dj;                                                                        \
    sj = kAlphaSmall ? (sj) + alpha * dj : (wj) - dj * alpha_r;                           \
    wj = sj;                                                                              \
  }

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

// Trust-ratio pass 1: moments, and the squared norms of the direction and of the weights.
template <typename T, bool kAdaptive, bool kSmall, bool kStats, bool kDecay>
void adam_norms_row(const AdamArgs<T>& s, const T* __restrict__ w, const T* __restrict__ g,
                    T* __restrict__ m, T* __restrict__ v, int64_t len, T mean, double& u_sq,
                    double& w_sq, TaskStats* st) {
  RANGERLAB_ADAM_LOCALS(s);
  (void)alpha, (void)alpha_r, (void)alpha_small, (void)neg_lr;
  // Spans short enough that m, v, w and the directions stay in L1 between the loops.
  T u[kSpan];
  for (int64_t b = 0; b < len; b += kSpan) {
    const int64_t stop = std::min(len, b + kSpan);
    if constexpr (!kStats) {
      for (int64_t j = b; j < stop; ++j) {
        RANGERLAB_ADAM_MOMENTS(g[j] - mean, w[j], m[j], v[j]);
        RANGERLAB_ADAM_DIRECTION(uj, w[j], m[j], v[j]);
        u[j - b] = uj;
      }
    } else {
      T sg = 0, sq = 0, sq2 = 0, shift = 0;
      if constexpr (kAdaptive) shift = factor_shift(st, s, w[b], g[b] - mean, v[b]);
#pragma omp simd reduction(+ : sg, sq, sq2)
      for (int64_t j = b; j < stop; ++j) {
        sg += g[j] * g[j];
        RANGERLAB_ADAM_MOMENTS(g[j] - mean, w[j], m[j], v[j]);
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

// Adam family: Adam/AdamW, RAdam, Ranger (+ Lookahead sync). Per tensor i the direction is
//   u = a_i * m * (1 / (sqrt(v) / d_i + eps))   (adaptive_i)   or   u = a_i * m   (RAdam's start)
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
            for_rows<R()>(task, g, gc, st, [&](int64_t b, int64_t len, T mean) {
              adam_norms_row<T, A(), B(), R(), D()>(s, w + b, g + b, m + b, v + b, len, mean,
                                                    st->u_sq, st->w_sq, st);
            });
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

}  // namespace

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
