#include "train/head_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <numeric>

#include "base/error.h"
#include "base/parallel_for.h"
#include "kernels/linear_f32.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif
#ifndef _WIN32
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace m3 {

// ---------------------------------------------------------------------------------------------
// HiddenStateCache

std::unique_ptr<HiddenStateCache> HiddenStateCache::Open(const std::string& path, int64_t hidden, std::vector<int32_t> ids,
                                                         std::vector<uint32_t> offsets) {
  if (hidden < 1) throw CoreError("ERR_INPUT", "hidden-state cache: hidden width must be positive");
  if (offsets.size() < 2 || offsets.front() != 0 || offsets.back() != ids.size())
    throw CoreError("ERR_INPUT", "hidden-state cache: offsets must start at 0 and end at the token count");
  for (size_t i = 1; i < offsets.size(); ++i)
    if (static_cast<uint64_t>(offsets[i]) < static_cast<uint64_t>(offsets[i - 1]) + 2)
      throw CoreError("ERR_INPUT", "hidden-state cache: text " + std::to_string(i - 1) + " has fewer than 2 tokens (<s> and </s>)");
  const uint64_t bytes = static_cast<uint64_t>(ids.size()) * static_cast<uint64_t>(hidden) * sizeof(float);
  std::unique_ptr<HiddenStateCache> cache(new HiddenStateCache());
  cache->hidden_ = hidden;
  cache->ids_ = std::move(ids);
  cache->offsets_ = std::move(offsets);
#ifndef _WIN32
  // O_NONBLOCK: a FIFO put in the cache's place must not block this open forever.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw CoreError("ERR_INPUT", "hidden-state cache '" + path + "' cannot be opened: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw CoreError("ERR_INPUT", "hidden-state cache '" + path + "' is not a regular file; delete it to rebuild it");
  }
  if (::fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) != bytes) {
    ::close(fd);
    throw CoreError("ERR_INPUT", "hidden-state cache '" + path + "' holds " + std::to_string(static_cast<uint64_t>(st.st_size)) +
                                     " bytes, not the " + std::to_string(bytes) + " its index describes; delete it to rebuild it");
  }
  void* map = bytes ? ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0) : nullptr;
  ::close(fd);
  if (map == MAP_FAILED) throw CoreError("ERR_INPUT", "hidden-state cache '" + path + "' cannot be mapped: " + std::strerror(errno));
  cache->map_ = map;
  cache->map_bytes_ = bytes;
  cache->data_ = static_cast<const float*>(map);
#else
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in || static_cast<uint64_t>(in.tellg()) != bytes)
    throw CoreError("ERR_INPUT", "hidden-state cache '" + path + "' is missing or does not hold " + std::to_string(bytes) + " bytes");
  in.seekg(0);
  cache->owned_.resize(bytes / sizeof(float));
  in.read(reinterpret_cast<char*>(cache->owned_.data()), static_cast<std::streamsize>(bytes));
  cache->data_ = cache->owned_.data();
#endif
  return cache;
}

HiddenStateCache::~HiddenStateCache() {
#ifndef _WIN32
  if (map_) ::munmap(map_, map_bytes_);
#endif
}

// ---------------------------------------------------------------------------------------------
// HeadTrainer

namespace {

/// The heads' forward pass on one text, kept for the backward pass.
struct TextForward {
  int32_t text = 0;
  std::vector<float> dense;       // normalize(H[0]), hidden floats
  std::vector<uint32_t> lex_ids;  // ascending, unique
  std::vector<float> lex_w;       // max ReLU weight of each id
  std::vector<int32_t> lex_pos;   // the position that gave the max
  std::vector<float> lex_grad;    // d(loss)/d(lex_w)
  int64_t rows = 0;               // ColBERT rows: tokens 1 .. n-1
  int64_t first = 0;              // index of its first ColBERT row in the step's stacked rows
};

double Dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

void Axpy(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

/// Flushes subnormal floats to zero on this thread while it lives (x86: MXCSR FTZ and DAZ).
/// Back-propagated softmax tails produce them, and every operation on one is two orders of
/// magnitude slower; their contribution is below fp32's resolution of the sums they enter.
class FlushSubnormals {
 public:
#if defined(__x86_64__) || defined(_M_X64)
  FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushSubnormals() { _mm_setcsr(saved_); }
 private:
  unsigned saved_;
#endif
};

/// ParallelFor with subnormals flushed on every thread.
void ParallelForFlushed(int64_t count, int threads, const std::function<void(int64_t, int)>& fn) {
  ParallelFor(count, threads, [&](int64_t i, int worker) {
    FlushSubnormals flush;
    fn(i, worker);
  });
}

/// Whether a gradient term is worth accumulating. Softmax tails at temperature 0.02 reach
/// e^-100 and below; such terms change nothing in fp32 but, as subnormal floats, would slow every
/// operation they enter by two orders of magnitude.
inline bool Matters(double g) { return std::fabs(g) >= 1e-30; }

/// Lexical weights of a text with the position of each id's max (docs/semantics.md: ids 0..3 and
/// weights <= 0 dropped, max per id; the first position wins a tie).
void Lexical(const int32_t* ids, const float* weights, int64_t n, TextForward* f) {
  std::vector<int32_t> order;
  for (int64_t t = 0; t < n; ++t)
    if (ids[t] > 3 && weights[t] > 0.0f) order.push_back(static_cast<int32_t>(t));
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  for (int32_t t : order) {
    const uint32_t id = static_cast<uint32_t>(ids[t]);
    if (!f->lex_ids.empty() && f->lex_ids.back() == id) {
      if (weights[t] > f->lex_w.back()) {
        f->lex_w.back() = weights[t];
        f->lex_pos.back() = t;
      }
      continue;
    }
    f->lex_ids.push_back(id);
    f->lex_w.push_back(weights[t]);
    f->lex_pos.push_back(t);
  }
}

/// Calls fn(i, j) for each id the two sorted lists share.
template <typename Fn>
void ForShared(const TextForward& a, const TextForward& b, Fn fn) {
  size_t i = 0, j = 0;
  while (i < a.lex_ids.size() && j < b.lex_ids.size()) {
    if (a.lex_ids[i] < b.lex_ids[j]) ++i;
    else if (a.lex_ids[i] > b.lex_ids[j]) ++j;
    else fn(i++, j++);
  }
}

}  // namespace

struct HeadTrainer::Scratch {
  PackedLinear colbert_head;  // the ColBERT head packed for the linear kernel
  PackedLinear passages;      // the passages' normalised ColBERT rows as a packed "weight"
  PackedLinear stacked;       // every ColBERT row's hidden state as the packed weight Hᵀ (panels of H rows)
  std::vector<float> hidden_rows;   // rows x hidden: the same rows, row-major (the ColBERT head's input)
  std::vector<float> colbert;       // rows x dim: normalised ColBERT rows of every text
  std::vector<float> norms;         // rows: their norms before normalisation
  std::vector<float> colbert_grad;  // rows x dim: d(loss)/d(normalised rows), then d(loss)/d(C)
  std::vector<float> row_max;       // query rows x passages: max similarity
  std::vector<int32_t> row_best;    // query rows x passages: the passage row that gave it
  std::vector<float> dct, grad;
  std::vector<std::vector<float>> sims;  // per worker
};

HeadTrainer::~HeadTrainer() = default;

HeadTrainer::HeadTrainer(std::shared_ptr<const HiddenStateCache> cache, int64_t dim, std::vector<float> params, int threads)
    : cache_(std::move(cache)), threads_(std::max(1, threads)), scratch_(std::make_unique<Scratch>()) {
  scratch_->sims.resize(static_cast<size_t>(threads_));
  layout_.hidden = cache_->hidden();
  layout_.dim = dim;
  if (dim < 1) throw CoreError("ERR_INPUT", "HeadTrainer: the ColBERT width must be positive");
  if (static_cast<int64_t>(params.size()) != layout_.size())
    throw CoreError("ERR_INPUT", "HeadTrainer: expected " + std::to_string(layout_.size()) + " parameters, got " +
                                     std::to_string(params.size()));
  params_ = std::move(params);
  m_.assign(params_.size(), 0.0f);
  v_.assign(params_.size(), 0.0f);
}

void HeadTrainer::SetState(std::vector<float> params, std::vector<float> m, std::vector<float> v, int64_t t) {
  const size_t n = static_cast<size_t>(layout_.size());
  if (params.size() != n || m.size() != n || v.size() != n || t < 0)
    throw CoreError("ERR_INPUT", "HeadTrainer state: expected " + std::to_string(n) + " parameters and moments each");
  params_ = std::move(params);
  m_ = std::move(m);
  v_ = std::move(v);
  t_ = t;
}

StepResult HeadTrainer::Step(const std::vector<int32_t>& queries, const std::vector<int32_t>& passages,
                             const std::vector<int32_t>& target, const StepOptions& o) {
  const int64_t Q = static_cast<int64_t>(queries.size()), P = static_cast<int64_t>(passages.size());
  if (Q < 1 || P < 1 || static_cast<int64_t>(target.size()) != Q)
    throw CoreError("ERR_INPUT", "a training group needs at least one query and one passage, and one target per query");
  for (int32_t t : queries)
    if (t < 0 || t >= cache_->texts()) throw CoreError("ERR_INPUT", "query text index " + std::to_string(t) + " is out of range");
  for (int32_t t : passages)
    if (t < 0 || t >= cache_->texts()) throw CoreError("ERR_INPUT", "passage text index " + std::to_string(t) + " is out of range");
  const int64_t H = layout_.hidden, D = layout_.dim;
  const HeadLayout& L = layout_;
  FlushSubnormals flush;
  Scratch& sc = *scratch_;
  const float* sw = params_.data() + L.sparse_w();
  const float sb = params_[L.sparse_b()];
  PackLinearInto(params_.data() + L.colbert_w(), params_.data() + L.colbert_b(), D, H, &sc.colbert_head);
  constexpr int64_t kRowChunk = 96;  // rows per call of the linear kernel (one pass over its weight)

  // Texts: queries first, then passages; their ColBERT rows (tokens 1 .. n-1) stacked in that order.
  std::vector<TextForward> f(static_cast<size_t>(Q + P));
  int64_t rows = 0;
  for (int64_t k = 0; k < Q + P; ++k) {
    f[k].text = k < Q ? queries[k] : passages[k - Q];
    f[k].rows = cache_->length(f[k].text) - 1;
    f[k].first = rows;
    rows += f[k].rows;
  }
  const int64_t query_rows = f[Q].first, passage_rows = rows - query_rows;
  constexpr int64_t B = kLinearColumnBlock;
  PackedLinear& stacked = sc.stacked;
  stacked.in = rows;
  stacked.out = H;
  stacked.out_padded = (H + B - 1) / B * B;
  stacked.panel_stride = rows * B;
  stacked.wt.resize(static_cast<size_t>(rows * stacked.out_padded));
  stacked.bias.assign(static_cast<size_t>(stacked.out_padded), 0.0f);
  sc.hidden_rows.resize(static_cast<size_t>(rows * H));

  // Forward, per text: dense, lexical weights, and the hidden rows gathered for the ColBERT head.
  ParallelForFlushed(Q + P, threads_, [&](int64_t k, int) {
    TextForward& x = f[k];
    const int64_t n = x.rows + 1;
    const float* h = cache_->rows(x.text);
    x.dense.assign(h, h + H);
    const double norm = std::sqrt(Dot(h, h, H));
    for (float& v : x.dense) v = static_cast<float>(v / std::max(norm, 1e-12));
    std::vector<float> w(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) w[t] = std::max(0.0f, static_cast<float>(Dot(h + t * H, sw, H) + sb));
    Lexical(cache_->ids(x.text), w.data(), n, &x);
    std::memcpy(sc.hidden_rows.data() + x.first * H, h + H, x.rows * H * sizeof(float));
    for (int64_t i = 0; i < x.rows; ++i) {
      const float* src = h + (i + 1) * H;
      for (int64_t c = 0; c < stacked.out_padded; c += B) {
        float* dst = stacked.wt.data() + (c / B) * stacked.panel_stride + (x.first + i) * B;
        const int64_t cols = std::min(B, H - c);
        std::memcpy(dst, src + c, cols * sizeof(float));
        std::fill(dst + cols, dst + B, 0.0f);
      }
    }
  });
  // The ColBERT head on all rows at once, then each row normalised.
  sc.colbert.resize(static_cast<size_t>(rows * D));
  sc.norms.resize(static_cast<size_t>(rows));
  ParallelForFlushed((rows + kRowChunk - 1) / kRowChunk, threads_, [&](int64_t c, int) {
    const int64_t r0 = c * kRowChunk, r1 = std::min(rows, r0 + kRowChunk);
    LinearForward(sc.colbert_head, sc.hidden_rows.data() + r0 * H, r1 - r0, H, sc.colbert.data() + r0 * D, D);
    for (int64_t r = r0; r < r1; ++r) {
      float* row = sc.colbert.data() + r * D;
      const double norm = std::sqrt(Dot(row, row, D));
      sc.norms[r] = static_cast<float>(norm);
      const double inv = 1.0 / std::max(norm, 1e-12);
      for (int64_t d = 0; d < D; ++d) row[d] = static_cast<float>(row[d] * inv);
    }
  });
  const float* E = sc.colbert.data();

  // MaxSim: every query row against every passage row, in chunks of query rows; the max and
  // argmax per passage kept per query row.
  PackLinearInto(E + query_rows * D, nullptr, passage_rows, D, &sc.passages);
  std::vector<int64_t> passage_first(P + 1);
  for (int64_t p = 0; p <= P; ++p) passage_first[p] = (p < P ? f[Q + p].first : rows) - query_rows;
  sc.row_max.resize(static_cast<size_t>(query_rows * P));
  sc.row_best.resize(static_cast<size_t>(query_rows * P));
  ParallelForFlushed((query_rows + kRowChunk - 1) / kRowChunk, threads_, [&](int64_t c, int worker) {
    const int64_t r0 = c * kRowChunk, r1 = std::min(query_rows, r0 + kRowChunk);
    std::vector<float>& sims = sc.sims[worker];
    sims.resize(static_cast<size_t>((r1 - r0) * passage_rows));
    LinearForward(sc.passages, E + r0 * D, r1 - r0, D, sims.data(), passage_rows);
    for (int64_t r = r0; r < r1; ++r) {
      const float* s = sims.data() + (r - r0) * passage_rows;
      for (int64_t p = 0; p < P; ++p) {
        int64_t best = passage_first[p];
        for (int64_t j = best + 1; j < passage_first[p + 1]; ++j)
          if (s[j] > s[best]) best = j;
        sc.row_max[r * P + p] = s[best];
        sc.row_best[r * P + p] = static_cast<int32_t>(best + query_rows);  // a row of E
      }
    }
  });
  std::vector<float> s_dense(Q * P), s_lex(Q * P), s_colbert(Q * P);
  ParallelForFlushed(Q, threads_, [&](int64_t q, int) {
    const TextForward& x = f[q];
    for (int64_t p = 0; p < P; ++p) {
      const TextForward& y = f[Q + p];
      double sum = 0;
      for (int64_t r = x.first; r < x.first + x.rows; ++r) sum += sc.row_max[r * P + p];
      s_colbert[q * P + p] = static_cast<float>(sum / static_cast<double>(x.rows));
      s_dense[q * P + p] = static_cast<float>(Dot(x.dense.data(), y.dense.data(), H));
      double lex = 0;
      ForShared(x, y, [&](size_t a, size_t b) { lex += static_cast<double>(x.lex_w[a]) * y.lex_w[b]; });
      s_lex[q * P + p] = static_cast<float>(lex);
    }
  });

  for (int64_t i = 0; i < Q * P; ++i) {
    if (!std::isfinite(s_lex[i]) || !std::isfinite(s_colbert[i]))
      throw CoreError("ERR_RUNTIME", "the heads' scores are no longer finite (training diverged); lower the learning rate");
  }
  StepResult result;
  result.loss = M3Loss(s_dense.data(), s_lex.data(), s_colbert.data(), target.data(), Q, P, o.loss);
  std::vector<float>& grad = sc.grad;
  grad.assign(static_cast<size_t>(L.size()), 0.0f);
  const std::vector<double>& g_lex = result.loss.grad_lex;
  const std::vector<double>& g_col = result.loss.grad_colbert;

  if (o.train_sparse) {
    // d(loss)/d(lexical weight) per text and id: each item (a query, or a passage) gathers its
    // own from the other side's weights, so no two threads write the same text.
    for (auto& x : f) x.lex_grad.assign(x.lex_w.size(), 0.0f);
    ParallelForFlushed(Q + P, threads_, [&](int64_t k, int) {
      TextForward& x = f[k];
      if (k < Q) {
        for (int64_t p = 0; p < P; ++p) {
          const float g = static_cast<float>(g_lex[k * P + p]);
          if (Matters(g)) ForShared(x, f[Q + p], [&](size_t a, size_t b) { x.lex_grad[a] += g * f[Q + p].lex_w[b]; });
        }
      } else {
        const int64_t p = k - Q;
        for (int64_t q = 0; q < Q; ++q) {
          const float g = static_cast<float>(g_lex[q * P + p]);
          if (Matters(g)) ForShared(f[q], x, [&](size_t a, size_t b) { x.lex_grad[b] += g * f[q].lex_w[a]; });
        }
      }
    });
    // Through the max (the argmax position) and ReLU (kept weights are > 0) to w and b.
    std::vector<double> gw(static_cast<size_t>(H), 0.0);
    double gb = 0;
    for (const TextForward& x : f) {
      const float* h = cache_->rows(x.text);
      for (size_t k = 0; k < x.lex_w.size(); ++k) {
        const double g = x.lex_grad[k];
        if (!Matters(g)) continue;
        const float* row = h + static_cast<int64_t>(x.lex_pos[k]) * H;
        for (int64_t d = 0; d < H; ++d) gw[d] += g * row[d];
        gb += g;
      }
    }
    for (int64_t d = 0; d < H; ++d) grad[L.sparse_w() + d] = static_cast<float>(gw[d]);
    grad[L.sparse_b()] = static_cast<float>(gb);
  }

  if (o.train_colbert) {
    // d(loss)/d(normalised rows) through the mean of maxima: each item (a query, or a passage)
    // gathers the terms of its own rows, so no two threads write the same row.
    std::vector<float>& dE = sc.colbert_grad;
    dE.assign(static_cast<size_t>(rows * D), 0.0f);
    ParallelForFlushed(Q + P, threads_, [&](int64_t k, int) {
      const TextForward& x = f[k];
      if (k < Q) {
        for (int64_t p = 0; p < P; ++p) {
          const float c = static_cast<float>(g_col[k * P + p] / static_cast<double>(x.rows));
          if (!Matters(c)) continue;
          for (int64_t r = x.first; r < x.first + x.rows; ++r) Axpy(c, E + sc.row_best[r * P + p] * D, dE.data() + r * D, D);
        }
      } else {
        const int64_t p = k - Q;
        for (int64_t q = 0; q < Q; ++q) {
          const float c = static_cast<float>(g_col[q * P + p] / static_cast<double>(f[q].rows));
          if (!Matters(c)) continue;
          for (int64_t r = f[q].first; r < f[q].first + f[q].rows; ++r) Axpy(c, E + r * D, dE.data() + sc.row_best[r * P + p] * D, D);
        }
      }
    });
    // Through the L2 normalisation, in place: dC = (dE - E (E . dE)) / ||C||. Then
    // dW = dCᵀ · H is one matrix product: the linear kernel with the stacked hidden rows as its
    // packed weight and dCᵀ as its input; db = the sum of dC's rows.
    ParallelForFlushed((rows + kRowChunk - 1) / kRowChunk, threads_, [&](int64_t c, int) {
      for (int64_t r = c * kRowChunk; r < std::min(rows, (c + 1) * kRowChunk); ++r) {
        const float* e = E + r * D;
        float* de = dE.data() + r * D;
        const float proj = static_cast<float>(Dot(e, de, D));
        const float inv = static_cast<float>(1.0 / std::max<double>(sc.norms[r], 1e-12));
        for (int64_t d = 0; d < D; ++d) de[d] = (de[d] - e[d] * proj) * inv;
      }
    });
    sc.dct.resize(static_cast<size_t>(D * rows));
    TransposeBlocked(dE.data(), rows, D, D, sc.dct.data(), rows);
    // The rows in blocks of kBlock, whose panel slices stay in L2 while the kernel passes over
    // them once per tile of output rows (whole panels of all rows would come from memory).
    constexpr int64_t kBlock = 2048;
    float* gw = grad.data() + L.colbert_w();
    const int64_t per = std::max<int64_t>(8, (D + threads_ - 1) / threads_);
    ParallelForFlushed((D + per - 1) / per, threads_, [&](int64_t part, int worker) {
      const int64_t d0 = part * per, d1 = std::min(D, d0 + per);
      std::vector<float>& partial = sc.sims[worker];
      for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
        PackedLinear block;
        block.in = std::min(kBlock, rows - r0);
        block.out = H;
        block.out_padded = stacked.out_padded;
        block.panel_stride = stacked.panel_stride;
        block.wt_view = stacked.wt.data() + r0 * B;
        block.bias.assign(static_cast<size_t>(stacked.out_padded), 0.0f);
        float* y = gw + d0 * H;
        if (r0 > 0) {
          partial.resize(static_cast<size_t>((d1 - d0) * H));
          y = partial.data();
        }
        LinearForward(block, sc.dct.data() + d0 * rows + r0, d1 - d0, rows, y, H);
        if (r0 > 0)
          for (int64_t i = 0; i < (d1 - d0) * H; ++i) gw[d0 * H + i] += partial[i];
      }
      for (int64_t d = d0; d < d1; ++d) {
        double b = 0;
        for (int64_t r = 0; r < rows; ++r) b += sc.dct[d * rows + r];
        grad[L.colbert_b() + d] = static_cast<float>(b);
      }
    });
  }

  double sq = 0;
  for (float g : grad) sq += static_cast<double>(g) * g;
  result.grad_norm = std::sqrt(sq);
  if (!std::isfinite(result.loss.loss) || !std::isfinite(result.grad_norm))
    throw CoreError("ERR_RUNTIME", "the loss or its gradient is not finite (training diverged); the heads were not updated; "
                                   "lower the learning rate");
  if (o.update) Adam(grad, o);
  else result.grad = grad;
  return result;
}

void HeadTrainer::Adam(const std::vector<float>& grad, const StepOptions& o) {
  ++t_;
  // Bias corrections folded into the step size and epsilon (the same arithmetic as
  // m_hat / (sqrt(v_hat) + eps)), so the loop is plain fp32 the compiler vectorises.
  const double c1 = 1.0 - std::pow(o.beta1, static_cast<double>(t_));
  const double c2 = 1.0 - std::pow(o.beta2, static_cast<double>(t_));
  const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
  const float a1 = static_cast<float>(1.0 - o.beta1), a2 = static_cast<float>(1.0 - o.beta2);
  const float step = static_cast<float>(o.lr / c1), inv_sqrt_c2 = static_cast<float>(1.0 / std::sqrt(c2));
  const float eps = static_cast<float>(o.eps), decay = static_cast<float>(o.lr * o.weight_decay);
  auto update = [&](int64_t begin, int64_t end) {
    float* __restrict p = params_.data();
    float* __restrict m = m_.data();
    float* __restrict v = v_.data();
    const float* __restrict g = grad.data();
    for (int64_t i = begin; i < end; ++i) {
      m[i] = b1 * m[i] + a1 * g[i];
      v[i] = b2 * v[i] + a2 * g[i] * g[i];
      p[i] -= step * m[i] / (std::sqrt(v[i]) * inv_sqrt_c2 + eps) + decay * p[i];
    }
  };
  if (o.train_sparse) update(layout_.sparse_w(), layout_.colbert_w());
  if (o.train_colbert) update(layout_.colbert_w(), layout_.size());
}

}  // namespace m3
