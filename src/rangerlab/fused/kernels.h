// Fused CPU optimizer steps for rangerlab (see rangerlab/fused/__init__.py for the design note):
// what every kernel shares. The kernels are split over three files (adam_step.cpp,
// adam_trust.cpp, sgd.cpp, which also registers them) that the build compiles in parallel: their
// template instances are most of the build time (into an empty cache on 2 cores, in the same
// hour: 41 s as one file, 31-34 s as three).
//
// Each kernel streams a bucket's weights, gradients and state once (twice where a per-tensor norm
// must be known before the update: LARS and the LAMB trust ratio), split into row-aligned chunks
// that run in parallel on ATen's thread pool. Gradient Centralization costs no extra trip to
// memory: the Adam family's kernels take the next row's mean in the loop that updates this row
// (for_gc_blocks), SGD's and LARS's take a row's mean just before its update, the row then still
// in cache for it. The maths
// follows rangerlab's reference transforms operation by operation (same order, torch's lerp
// formula), so the fast path agrees with the reference path to rounding. Two exceptions, each
// one rounding away from the reference: the adaptive direction is a * m times the adaptive
// factor 1 / (sqrt(v) * (1 / d) + eps), where the reference divides a * m by sqrt(v) / d + eps.
// The factor is what telemetry reports, so a recorded step takes its statistics for the price of
// two additions per element; and 1 / d is one number per tensor, so the loop divides once per
// element, not twice. Single-threaded the loop is nearly as slow from L2 cache as from memory
// (0.63-0.66 against 0.71-0.88 ns per parameter), so its arithmetic, the divider most of all, is
// what it waits on: without the second division Adam's kernel with GC took 1-3% less time and
// its recorded step 3-5% less (ResNet-18's shapes, two builds in one process).

#pragma once

// The narrowest ATen headers that declare what the kernels use (ATen/ATen.h, every operator's
// declaration, added seconds to the compile of each file).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

namespace rangerlab_kernels {

using at::Tensor;

// The helpers have internal linkage in every file that includes them (an unnamed namespace, as
// in the one file the kernels were before), so the compiler inlines the loops into their callers
// as it did then. As weak symbols shared between the files they were compiled otherwise, and a
// recorded Lookahead sync step of Ranger-LARS ran 4x slower (the test of the library's exported
// symbols in tests/test_fused_build.py guards this).
namespace {

constexpr int64_t kChunk = 1 << 15;  // elements per parallel task

// Elements [begin, end) of tensor `index`. `row` is the length of what GC centralizes
// (numel / size(0) for a tensor with dim() > 1 when gc is on; tasks then hold whole rows), or 0.
struct Task {
  int64_t index, begin, end, row;
};

inline std::vector<Task> make_tasks(at::TensorList params, bool gc) {
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

// Vec<T>: a vector of T in the data type; Bits<T>: the integers of its size, for selecting lanes
// by bit masks (`select`).
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
  typedef int32_t bits __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
  typedef int64_t bits __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
using Bits = typename VecOf<T>::bits;

template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);

// a where mask's lanes are all ones, b where they are zero (bit for bit: no arithmetic on a or b).
template <typename T>
inline Vec<T> select(const Bits<T>& mask, const Vec<T>& a, const Vec<T>& b) {
  return (Vec<T>)(((Bits<T>)a & mask) | ((Bits<T>)b & ~mask));
}

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

// The sum of g[0, len) for GC's mean: one vector of partial sums in the data type per span of
// kSumSpan elements, each span's lanes then added into doubles lane by lane, and the row's last
// len % lanes elements one by one at the end. The Adam family's kernels take the next row's sum
// inside the current row's loop in this same order (for_gc_blocks), so a row's mean is the same
// wherever it is taken. A span of 2,048 is 256 terms per lane in float32 (shorter spans end the
// update loop more often, which costs: for_gc_blocks). On rows of a large common offset and a
// small spread (the mean's hard case: g - mean cancels), SGD's float32 step with GC measured as
// close to float64 as the reference path's with torch's float32 mean (rows of 4,608 to 100,000).
// Telemetry's sum of g^2 is taken in the update loop.
constexpr int64_t kSumSpan = 2048;

template <typename T>
struct RowSum {
  double lanes[kLanes<T>] = {};
  T tail = 0;
  void add(const Vec<T>& acc) {
    for (int64_t k = 0; k < kLanes<T>; ++k) lanes[k] += static_cast<double>(acc[k]);
  }
  double total() const {
    double sum = 0;
    for (int64_t k = 0; k < kLanes<T>; ++k) sum += lanes[k];
    return sum + static_cast<double>(tail);
  }
};

template <typename T>
inline double row_sum(const T* __restrict__ g, int64_t len) {
  RowSum<T> sum;
  int64_t j = 0;
  for (int64_t b = 0; b < len; b += kSumSpan) {
    const int64_t stop = std::min(len, b + kSumSpan);
    Vec<T> acc = {};
    for (; j + kLanes<T> <= stop; j += kLanes<T>) acc += load<T>(g + j);
    sum.add(acc);
  }
  for (; j < len; ++j) sum.tail += g[j];
  return sum.total();
}

inline void check_lists(std::initializer_list<at::TensorList> lists, int64_t n) {
  for (const auto& l : lists) {
    TORCH_CHECK(static_cast<int64_t>(l.size()) == n, "rangerlab fused: list lengths differ");
    for (const auto& t : l) {
      TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(),
                  "rangerlab fused: tensors must be contiguous CPU tensors");
    }
  }
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

// Gradient Centralization's rows of one task (tasks hold whole rows: make_tasks) for the Adam
// family, in blocks of one vector, with the next row's sum (its mean) taken in the same loop as
// this row's update, in row_sum's order, so that a row's mean is the same wherever it is taken. A
// pass of its own over a row's gradients before its update is one stream from memory with
// nothing beside it: on ResNet-18's shapes, 1 thread, it made Adam's kernel with GC 1.20x the
// kernel without GC, and 1.04x with the read-ahead (scripts/bench_telemetry_kernels.py). The last
// row of a task reads ahead into the next task's first row, whose sum is dropped (that task takes
// it again, from cache where the same thread runs it); the tensor's last row reads itself again.
// With kStats (telemetry) each row adds its removed mean's squared norm to st, as in for_rows.
// The kernel's parts:
//   row_fn(r, mean)       a row starts at element r;
//   block(r + j, mean)    its elements [r + j, r + j + lanes);
//   element(r + j, mean)  one of its last (row length % lanes) elements;
//   span(n)               after each span of n <= kSumSpan elements, its last elements included
//                         (where vector sums are folded).
// The sums that telemetry takes in these blocks are vectors carried from block to block, not
// `omp simd` reductions: those end with every loop, and a row would end them (a loop that ends
// often costs more than its sums: rows in spans of 512 instead of 2,048 made Adam's recorded
// kernel with GC 1.10x its unrecorded one instead of 1.05x).
// Always inlined: where GCC compiled it as a function of its own, the kernels' parts became calls
// through their closures, and Ranger's recorded sync step ran 6x slower (every test still passed).
template <bool kStats, typename T, typename RowFn, typename Block, typename Element, typename Span>
__attribute__((always_inline)) inline void for_gc_blocks(
    const Task& task, int64_t numel, const T* __restrict__ g, TaskStats* st, const RowFn& row_fn,
    const Block& block, const Element& element, const Span& span) {
  constexpr int64_t L = kLanes<T>;
  const int64_t row = task.row;
  double next = row_sum(g + task.begin, row);
  for (int64_t r = task.begin; r < task.end; r += row) {
    const T mean = static_cast<T>(next / static_cast<double>(row));
    if constexpr (kStats) st->gc_sq += static_cast<double>(row) * mean * mean;
    row_fn(r, mean);
    const T* __restrict__ ahead_of = r + 2 * row <= numel ? g + r + row : g + r;
    RowSum<T> ahead;
    int64_t j = 0;
    for (int64_t b = 0; b < row; b += kSumSpan) {
      const int64_t stop = std::min(row, b + kSumSpan);
      Vec<T> acc = {};
      for (; j + L <= stop; j += L) {
        acc += load<T>(ahead_of + j);
        block(r + j, mean);
      }
      for (; j < stop; ++j) {  // the row's last elements (stop == row here)
        ahead.tail += ahead_of[j];
        element(r + j, mean);
      }
      ahead.add(acc);
      span(stop - b);
    }
    next = ahead.total();
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

inline double* stats_rows(const std::optional<Tensor>& stats, int64_t n) {
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

}  // namespace

// The operators (their schemas: sgd.cpp).
void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList slows, at::ArrayRef<double> a,
               at::ArrayRef<double> d, at::ArrayRef<int64_t> adaptive, double lr, double beta1,
               double beta2, double eps, double weight_decay, bool decoupled, bool gc, bool sync,
               double alpha, const std::optional<Tensor>& stats);
Tensor adam_trust_norms(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                        at::TensorList exp_avg_sqs, at::ArrayRef<double> a, at::ArrayRef<double> d,
                        at::ArrayRef<int64_t> adaptive, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled, bool gc,
                        const std::optional<Tensor>& stats);
void adam_trust_apply(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                      at::TensorList slows, at::ArrayRef<double> a, at::ArrayRef<double> d,
                      at::ArrayRef<int64_t> adaptive, at::ArrayRef<double> ratios, double lr,
                      double eps, double weight_decay, bool decoupled, bool sync, double alpha,
                      const std::optional<Tensor>& stats);
Tensor sgd_trust_norms(at::TensorList params, at::TensorList grads, bool gc);
void sgd_step(at::TensorList params, at::TensorList grads, at::TensorList bufs,
              at::ArrayRef<int64_t> fresh, at::ArrayRef<double> ratios, double lr,
              double momentum, double dampening, double weight_decay, bool nesterov, bool gc,
              const std::optional<Tensor>& stats);
std::vector<int64_t> advance_steps(at::TensorList steps);

}  // namespace rangerlab_kernels
