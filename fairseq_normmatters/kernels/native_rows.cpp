// The l1 / linf / topk / rms row norms of rows.py (same formulas, same saved statistics) for
// CPU tensors. native.py builds this file with the system C++ compiler (no torch headers) and
// calls the two extern "C" functions through ctypes on contiguous row-major data.
//
// A row is read from memory once and its passes run while it sits in cache; rows are split
// among OpenMP threads (the process's one libgomp.so.1: torch's), and dgamma/dbeta are summed
// in one buffer per thread, then across threads, instead of in a second walk over all rows.

#include <omp.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

namespace {

enum Kind { L1 = 0, LINF = 1, TOPK = 2, RMS = 3 };
enum DType { FLOAT32 = 0, FLOAT64 = 1, BFLOAT16 = 2 };
enum Status { OK = 0, BAD_DTYPE = 1, BAD_KIND = 2, BAD_K = 3 };

// Below this many elements one thread does the work: waking the others costs more.
constexpr int64_t kParallelElements = 1 << 15;

struct Float32 {
  using Storage = float;
  using Acc = float;
  static float load(float v) { return v; }
  static float store(float v) { return v; }
};

struct Float64 {
  using Storage = double;
  using Acc = double;
  static double load(double v) { return v; }
  static double store(double v) { return v; }
};

struct BFloat16 {  // computed in float32, stored rounded to nearest even (as torch rounds)
  using Storage = uint16_t;
  using Acc = float;
  static float load(uint16_t bits) {
    uint32_t word = uint32_t(bits) << 16;
    float value;
    std::memcpy(&value, &word, sizeof value);
    return value;
  }
  static uint16_t store(float value) {
    uint32_t word;
    std::memcpy(&word, &value, sizeof word);
    uint16_t rounded = uint16_t((word + 0x7fffu + ((word >> 16) & 1u)) >> 16);
    return value != value ? uint16_t(0x7fc0) : rounded;
  }
};

template <typename Acc>
struct Options {
  Kind kind;
  Acc constant, eps;
  int64_t k;
};

int threads_for(int64_t rows, int64_t n, int threads) {
  return rows * n >= kParallelElements ? std::max(threads, 1) : 1;
}

template <typename Acc>
Acc larger(Acc a, Acc b) { return a > b ? a : b; }  // by value, unlike std::max: vectorizes

template <typename T>
typename T::Acc row_mean(const typename T::Storage* x, int64_t n) {
  typename T::Acc sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += T::load(x[j]);
  return sum / n;
}

template <typename T>
typename T::Acc row_mean_square(const typename T::Storage* x, int64_t n) {
  typename T::Acc sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += T::load(x[j]) * T::load(x[j]);
  return sum / n;
}

template <typename T>
typename T::Acc max_abs_deviation(const typename T::Storage* x, int64_t n, typename T::Acc mean) {
  typename T::Acc largest = 0;
#pragma omp simd reduction(max : largest)
  for (int64_t j = 0; j < n; ++j) largest = larger(largest, std::fabs(T::load(x[j]) - mean));
  return largest;
}

template <typename T>
typename T::Acc mean_abs_deviation(const typename T::Storage* x, int64_t n, typename T::Acc mean) {
  typename T::Acc sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += std::fabs(T::load(x[j]) - mean);
  return sum / n;
}

// Copies the values a[j] >= bound to out (room for n values); returns how many.
template <typename Acc>
int64_t select_at_least_scalar(const Acc* a, int64_t n, Acc bound, Acc* out) {
  int64_t count = 0;
  for (int64_t j = 0; j < n; ++j) {  // branch-free: the comparison is unpredictable
    out[count] = a[j];
    count += a[j] >= bound;
  }
  return count;
}

template <typename Acc>
int64_t select_at_least(const Acc* a, int64_t n, Acc bound, Acc* out) {
  return select_at_least_scalar(a, n, bound, out);
}

#if defined(__AVX2__)
// For each 8-bit mask, the positions of its set bits, in order: the lanes to keep.
struct CompressTable {
  uint8_t lanes[256][8] = {};
  constexpr CompressTable() {
    for (int mask = 0; mask < 256; ++mask) {
      for (int bit = 0, kept = 0; bit < 8; ++bit) {
        if (mask & (1 << bit)) lanes[mask][kept++] = uint8_t(bit);
      }
    }
  }
};
constexpr CompressTable kCompress;

template <>  // eight lanes at once, packed to the front of the output without branches
int64_t select_at_least<float>(const float* a, int64_t n, float bound, float* out) {
  const __m256 limit = _mm256_set1_ps(bound);
  int64_t count = 0, j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 values = _mm256_loadu_ps(a + j);
    int mask = _mm256_movemask_ps(_mm256_cmp_ps(values, limit, _CMP_GE_OQ));
    __m256i lanes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(kCompress.lanes[mask])));
    _mm256_storeu_ps(out + count, _mm256_permutevar8x32_ps(values, lanes));  // out has room
    count += __builtin_popcount(mask);
  }
  return count + select_at_least_scalar(a + j, n - j, bound, out + count);
}
#endif

// (m, t) for the k largest of count values v: t the k-th largest (repeats counted), m their
// mean. A value is the k-th largest if fewer than k values exceed it and it is the smallest
// such. Those ranks are counted for all values at once (count^2 branch-free comparisons, each
// value compared against a vector of the others), so long lists (many ties) are partitioned by
// nth_element instead. v has room for count + 7 values and may be reordered.
template <typename Acc>
void top_k_of(Acc* v, int64_t count, int64_t k, Acc* m, Acc* t) {
  constexpr int64_t kRankedAtMost = 64;
  if (count > kRankedAtMost) {
    std::nth_element(v, v + k - 1, v + count, std::greater<Acc>());
    Acc sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += v[i];
    *m = sum / k;
    *t = v[k - 1];
    return;
  }
  int64_t padded = (count + 7) / 8 * 8;  // whole vectors; -1 exceeds no |d|
  std::fill(v + count, v + padded, Acc(-1));
  int32_t above[kRankedAtMost + 8] = {};  // above[i]: how many values exceed v[i]
  for (int64_t j = 0; j < count; ++j) {
    Acc value = v[j];
#pragma omp simd
    for (int64_t i = 0; i < padded; ++i) above[i] += value > v[i];
  }
  const Acc kInfinity = std::numeric_limits<Acc>::infinity();
  Acc threshold = kInfinity;
#pragma omp simd reduction(min : threshold)
  for (int64_t i = 0; i < count; ++i) threshold = std::min(threshold, above[i] < k ? v[i] : kInfinity);
  Acc above_sum = 0;
  int32_t above_count = 0;
#pragma omp simd reduction(+ : above_sum, above_count)
  for (int64_t j = 0; j < padded; ++j) {
    int32_t exceeds = v[j] > threshold;
    above_sum += Acc(exceeds) * v[j];
    above_count += exceeds;
  }
  *m = (above_sum + (Acc(k) - above_count) * threshold) / k;
  *t = threshold;
}

// Width of the runs the topk bound is computed over: a multiple of `groups` near 64 features.
int64_t run_width(int64_t n, int64_t groups) {
  int64_t width = groups * ((64 + groups - 1) / groups);
  return width <= n ? width : groups;
}

// Values of scratch space top_k_statistics needs for a row of n features.
int64_t top_k_scratch(int64_t n, int64_t k) {
  return n + std::max(n, run_width(n, 2 * k) + 2 * k) + 8;
}

// (m, t) of topk: the mean and the smallest of the k largest |x_j - mean| (repeated values
// counted as torch.topk counts them). Split by j mod 2k, the row's 2k groups have maxima; k of
// the groups hold an element at least as large as the k-th largest maximum, which therefore
// bounds the k-th largest |d| from below, and only the elements reaching it (about k of them)
// are ranked. The group maxima are folded from the column maxima of runs of `width` features
// (a multiple of 2k): one vectorized pass that also keeps |d|.
template <typename T>
void top_k_statistics(const typename T::Storage* x, int64_t n, typename T::Acc mean, int64_t k,
                      typename T::Acc* scratch, typename T::Acc* m, typename T::Acc* t) {
  using Acc = typename T::Acc;
  int64_t groups = 2 * k, width = run_width(n, groups);
  Acc *deviation = scratch, *candidates = scratch + n;
  Acc *columns = candidates, *group_max = candidates + width;  // until candidates are selected
  std::fill(columns, columns + width, Acc(0));
  for (int64_t start = 0; start < n; start += width) {
    int64_t length = std::min(width, n - start);
#pragma omp simd
    for (int64_t c = 0; c < length; ++c) {
      Acc value = std::fabs(T::load(x[start + c]) - mean);
      deviation[start + c] = value;
      columns[c] = larger(columns[c], value);
    }
  }
  std::copy(columns, columns + groups, group_max);
  for (int64_t base = groups; base < width; base += groups) {
#pragma omp simd
    for (int64_t group = 0; group < groups; ++group) group_max[group] = larger(group_max[group], columns[base + group]);
  }
  Acc bound, unused;
  top_k_of(group_max, groups, k, &unused, &bound);
  int64_t count = select_at_least(deviation, n, bound, candidates);
  if (count < k) {  // only NaN fails every comparison
    *m = *t = std::numeric_limits<Acc>::quiet_NaN();
    return;
  }
  top_k_of(candidates, count, k, m, t);
}

// Asks for the cache lines of values[0, count) to be loaded (a hint: never faults).
template <typename Storage>
void prefetch(const Storage* values, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(values);
  for (int64_t offset = 0; offset < count * int64_t(sizeof(Storage)); offset += 64) __builtin_prefetch(bytes + offset);
}

// y = (x - shift) * scale * gamma + beta (gamma, beta may be null).
template <typename T>
void write_affine(const typename T::Storage* x, typename T::Storage* y, int64_t n,
                  typename T::Acc shift, typename T::Acc scale, const typename T::Acc* weight,
                  const typename T::Acc* bias) {
  using Acc = typename T::Acc;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    Acc value = (T::load(x[j]) - shift) * scale;
    if (weight) value *= weight[j];
    if (bias) value += bias[j];
    y[j] = T::store(value);
  }
}

// One row's forward: writes y and the statistics (mean, m, t), or (1/rms) for rms. next_x:
// the following row (null after the last), fetched into cache during top-k's selection.
template <typename T>
void forward_row(const typename T::Storage* x, typename T::Storage* y, int64_t n,
                 const typename T::Acc* weight, const typename T::Acc* bias,
                 const Options<typename T::Acc>& options, typename T::Acc* scratch,
                 typename T::Acc* stats[3], int64_t row, const typename T::Storage* next_x) {
  using Acc = typename T::Acc;
  if (options.kind == RMS) {
    Acc inv_rms = Acc(1) / std::sqrt(row_mean_square<T>(x, n) + options.eps);
    stats[0][row] = inv_rms;
    write_affine<T>(x, y, n, Acc(0), inv_rms, weight, bias);
    return;
  }
  Acc mean = row_mean<T>(x, n), m, t;
  if (options.kind == L1) {
    m = t = mean_abs_deviation<T>(x, n, mean);
  } else if (options.kind == LINF) {
    m = t = max_abs_deviation<T>(x, n, mean);
  } else {
    if (next_x) prefetch(next_x, n);  // else its loads would wait until this long step ends
    top_k_statistics<T>(x, n, mean, options.k, scratch, &m, &t);
  }
  stats[0][row] = mean;
  stats[1][row] = m;
  stats[2][row] = t;
  write_affine<T>(x, y, n, mean, Acc(1) / (options.constant * m + options.eps), weight, bias);
}

template <typename T>
void forward_rows(const void* x, void* y, const void* weight, const void* bias, int64_t rows,
                  int64_t n, const Options<typename T::Acc>& options, void* stats[3], int threads) {
  using Storage = typename T::Storage;
  using Acc = typename T::Acc;
  Acc* statistics[3] = {static_cast<Acc*>(stats[0]), static_cast<Acc*>(stats[1]),
                        static_cast<Acc*>(stats[2])};
#pragma omp parallel num_threads(threads_for(rows, n, threads))
  {
    std::vector<Acc> scratch(options.kind == TOPK ? top_k_scratch(n, options.k) : 0);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      const Storage* row_x = static_cast<const Storage*>(x) + row * n;
      forward_row<T>(row_x, static_cast<Storage*>(y) + row * n, n, static_cast<const Acc*>(weight),
                     static_cast<const Acc*>(bias), options, scratch.data(), statistics, row,
                     row + 1 < rows ? row_x + n : nullptr);
    }
  }
}

// dm/dd_j = sign(d_j) * (above if |d_j| > threshold, at if |d_j| == threshold, else 0): the
// scale derivative of rows.scale_derivative in one form, with threshold -1 for l1 (every
// element is above) and t otherwise (t = m for linf). l1: above = 1/n; linf: at = 1/#ties;
// topk: above = 1/k, at = (k - #above) / (k #ties).
template <typename Acc>
struct ScaleDerivative {
  Acc above, at;
};

// Pass 1 over a row: the sums its dx needs. h = gamma * g, d = x - shift; the counts and signs
// are split at `threshold` (see ScaleDerivative).
template <typename Acc>
struct RowSums {
  Acc h = 0, hd = 0, count_above = 0, count_at = 0, sign_above = 0, sign_at = 0;
};

template <typename T>
RowSums<typename T::Acc> row_sums(const typename T::Storage* g, const typename T::Storage* x,
                                  int64_t n, const typename T::Acc* weight, typename T::Acc shift,
                                  typename T::Acc threshold) {
  using Acc = typename T::Acc;
  Acc h_sum = 0, hd = 0, count_above = 0, count_at = 0, sign_above = 0, sign_at = 0;
#pragma omp simd reduction(+ : h_sum, hd, count_above, count_at, sign_above, sign_at)
  for (int64_t j = 0; j < n; ++j) {
    Acc d = T::load(x[j]) - shift, h = T::load(g[j]);
    if (weight) h *= weight[j];
    Acc magnitude = std::fabs(d), sign = Acc(d > 0) - Acc(d < 0);
    Acc above = Acc(magnitude > threshold), at = Acc(magnitude == threshold);
    h_sum += h;
    hd += h * d;
    count_above += above;
    count_at += at;
    sign_above += sign * above;
    sign_at += sign * at;
  }
  return RowSums<Acc>{h_sum, hd, count_above, count_at, sign_above, sign_at};
}

template <typename Acc>
ScaleDerivative<Acc> scale_derivative(const Options<Acc>& options, const RowSums<Acc>& sums,
                                      int64_t n) {
  if (options.kind == L1) return {Acc(1) / n, Acc(0)};
  if (options.kind == LINF) return {Acc(0), Acc(1) / sums.count_at};
  Acc k = Acc(options.k);
  return {Acc(1) / k, (k - sums.count_above) / (k * sums.count_at)};
}

// Accumulates dgamma += g * (x - shift) * inv_scale and dbeta += g (either may be null).
template <typename T>
void accumulate_parameter_grads(const typename T::Storage* g, const typename T::Storage* x,
                                int64_t n, typename T::Acc shift, typename T::Acc inv_scale,
                                typename T::Acc* dweight, typename T::Acc* dbias) {
  if (dweight) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dweight[j] += T::load(g[j]) * (T::load(x[j]) - shift) * inv_scale;
  }
  if (dbias) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dbias[j] += T::load(g[j]);
  }
}

// The threshold of the ties of linf (the max |d|) and topk (the k-th largest |d|), from the
// row's own |x - shift|: the saved statistics serve the scale only, since a forward computed
// elsewhere (another backend, a separately compiled graph) can round them one ulp away from
// every |d| here, and then no element would tie (0/0).
template <typename T>
typename T::Acc own_threshold(const typename T::Storage* x, int64_t n, typename T::Acc shift,
                              const Options<typename T::Acc>& options, typename T::Acc* scratch) {
  using Acc = typename T::Acc;
  if (options.kind == LINF) return max_abs_deviation<T>(x, n, shift);
  Acc m, t;
  top_k_statistics<T>(x, n, shift, options.k, scratch, &m, &t);
  return t;
}

// One row's dx (rows.backward_rows), and its share of dgamma/dbeta into this thread's buffers.
template <typename T>
void backward_row(const typename T::Storage* g, const typename T::Storage* x,
                  typename T::Storage* dx, int64_t n, const typename T::Acc* weight,
                  const Options<typename T::Acc>& options, typename T::Acc* const stats[3],
                  int64_t row, typename T::Acc* dweight, typename T::Acc* dbias,
                  typename T::Acc* scratch) {
  using Acc = typename T::Acc;
  bool rms = options.kind == RMS;
  Acc shift = rms ? Acc(0) : stats[0][row];
  Acc inv_s = rms ? stats[0][row] : Acc(1) / (options.constant * stats[1][row] + options.eps);
  Acc threshold = rms || options.kind == L1 ? Acc(-1) : own_threshold<T>(x, n, shift, options, scratch);
  RowSums<Acc> sums = row_sums<T>(g, x, n, weight, shift, threshold);
  if (rms) {
    Acc coupling = inv_s * inv_s * inv_s * sums.hd / n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      Acc h = T::load(g[j]) * (weight ? weight[j] : Acc(1));
      dx[j] = T::store(inv_s * h - coupling * T::load(x[j]));
    }
  } else {
    ScaleDerivative<Acc> q = scale_derivative(options, sums, n);
    Acc coupling = options.constant * inv_s * inv_s * sums.hd;
    Acc mean_dd = (inv_s * sums.h - coupling * (q.above * sums.sign_above + q.at * sums.sign_at)) / n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      Acc d = T::load(x[j]) - shift, h = T::load(g[j]) * (weight ? weight[j] : Acc(1));
      Acc magnitude = std::fabs(d), sign = Acc(d > 0) - Acc(d < 0);
      Acc dm = sign * (magnitude > threshold ? q.above : (magnitude == threshold ? q.at : Acc(0)));
      dx[j] = T::store(h * inv_s - coupling * dm - mean_dd);
    }
  }
  accumulate_parameter_grads<T>(g, x, n, shift, inv_s, dweight, dbias);
}

template <typename T>
void backward_rows(const void* grad, const void* x, const void* weight, void* const stats[3],
                   int64_t rows, int64_t n, const Options<typename T::Acc>& options, void* dx,
                   void* dweight, void* dbias, int threads) {
  using Storage = typename T::Storage;
  using Acc = typename T::Acc;
  Acc* const statistics[3] = {static_cast<Acc*>(stats[0]), static_cast<Acc*>(stats[1]),
                              static_cast<Acc*>(stats[2])};
  int teams = threads_for(rows, n, threads);
  std::vector<Acc> partial(size_t(teams) * 2 * n, Acc(0));  // per thread: dgamma, dbeta
#pragma omp parallel num_threads(teams)
  {
    Acc* mine = partial.data() + size_t(omp_get_thread_num()) * 2 * n;
    std::vector<Acc> scratch(options.kind == TOPK ? top_k_scratch(n, options.k) : 0);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      backward_row<T>(static_cast<const Storage*>(grad) + row * n,
                      static_cast<const Storage*>(x) + row * n, static_cast<Storage*>(dx) + row * n,
                      n, static_cast<const Acc*>(weight), options, statistics, row,
                      dweight ? mine : nullptr, dbias ? mine + n : nullptr, scratch.data());
    }
  }
  Acc* outputs[2] = {static_cast<Acc*>(dweight), static_cast<Acc*>(dbias)};
  for (int which = 0; which < 2; ++which) {
    if (!outputs[which]) continue;
    std::fill(outputs[which], outputs[which] + n, Acc(0));
    for (int team = 0; team < teams; ++team) {
      const Acc* part = partial.data() + (size_t(team) * 2 + which) * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) outputs[which][j] += part[j];
    }
  }
}

template <typename Acc>
Status check(int kind, int64_t n, int64_t k, Options<Acc>* options, double constant, double eps) {
  if (kind < L1 || kind > RMS) return BAD_KIND;
  if (kind == TOPK && (k < 1 || k > n)) return BAD_K;
  *options = Options<Acc>{Kind(kind), Acc(constant), Acc(eps), k};
  return OK;
}

// The rows of `statistics` (count x rows, count 1 for rms: 1/rms; else 3: mean, m, t).
template <typename T>
void split_statistics(void* statistics, int kind, int64_t rows, void* stats[3]) {
  auto* first = static_cast<typename T::Acc*>(statistics);
  bool rms = kind == RMS;
  stats[0] = first;
  stats[1] = rms ? nullptr : first + rows;
  stats[2] = rms ? nullptr : first + 2 * rows;
}

template <typename T>
int forward_typed(int kind, int64_t rows, int64_t n, const void* x, void* y, const void* weight,
                  const void* bias, double constant, double eps, int64_t k, void* statistics,
                  int threads) {
  Options<typename T::Acc> options;
  Status status = check(kind, n, k, &options, constant, eps);
  if (status != OK) return status;
  void* stats[3];
  split_statistics<T>(statistics, kind, rows, stats);
  forward_rows<T>(x, y, weight, bias, rows, n, options, stats, threads);
  return OK;
}

template <typename T>
int backward_typed(int kind, int64_t rows, int64_t n, const void* grad, const void* x,
                   const void* weight, void* statistics, double constant, double eps, int64_t k,
                   void* dx, void* dweight, void* dbias, int threads) {
  Options<typename T::Acc> options;
  Status status = check(kind, n, k, &options, constant, eps);
  if (status != OK) return status;
  void* stats[3];
  split_statistics<T>(statistics, kind, rows, stats);
  backward_rows<T>(grad, x, weight, stats, rows, n, options, dx, dweight, dbias, threads);
  return OK;
}

}  // namespace

// x, y, grad, dx: rows x n in `dtype`; weight, bias, dweight, dbias: n, and statistics: count x
// rows (count 1 for rms, else 3), in its compute type (float32 for bfloat16). Null weight / bias
// / dweight / dbias: absent or not wanted. Returns 0, or 1 unknown dtype, 2 unknown kind, 3 k
// outside 1..n.
extern "C" int normmatters_forward(int dtype, int kind, int64_t rows, int64_t n, const void* x,
                                   void* y, const void* weight, const void* bias, double constant,
                                   double eps, int64_t k, void* statistics, int threads) {
  switch (dtype) {
    case FLOAT32: return forward_typed<Float32>(kind, rows, n, x, y, weight, bias, constant, eps, k, statistics, threads);
    case FLOAT64: return forward_typed<Float64>(kind, rows, n, x, y, weight, bias, constant, eps, k, statistics, threads);
    case BFLOAT16: return forward_typed<BFloat16>(kind, rows, n, x, y, weight, bias, constant, eps, k, statistics, threads);
    default: return BAD_DTYPE;
  }
}

extern "C" int normmatters_backward(int dtype, int kind, int64_t rows, int64_t n, const void* grad,
                                    const void* x, const void* weight, void* statistics,
                                    double constant, double eps, int64_t k, void* dx,
                                    void* dweight, void* dbias, int threads) {
  switch (dtype) {
    case FLOAT32: return backward_typed<Float32>(kind, rows, n, grad, x, weight, statistics, constant, eps, k, dx, dweight, dbias, threads);
    case FLOAT64: return backward_typed<Float64>(kind, rows, n, grad, x, weight, statistics, constant, eps, k, dx, dweight, dbias, threads);
    case BFLOAT16: return backward_typed<BFloat16>(kind, rows, n, grad, x, weight, statistics, constant, eps, k, dx, dweight, dbias, threads);
    default: return BAD_DTYPE;
  }
}
