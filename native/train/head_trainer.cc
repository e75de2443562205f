#include "train/head_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>

#include "core/core_error.h"
#include "core/parallel_for.h"
#include "kernels/linear_f32.h"

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
    if (offsets[i] < offsets[i - 1] + 2)
      throw CoreError("ERR_INPUT", "hidden-state cache: text " + std::to_string(i - 1) + " has fewer than 2 tokens (<s> and </s>)");
  const uint64_t bytes = static_cast<uint64_t>(ids.size()) * static_cast<uint64_t>(hidden) * sizeof(float);
  std::unique_ptr<HiddenStateCache> cache(new HiddenStateCache());
  cache->hidden_ = hidden;
  cache->ids_ = std::move(ids);
  cache->offsets_ = std::move(offsets);
#ifndef _WIN32
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw CoreError("ERR_INPUT", "hidden-state cache '" + path + "' cannot be opened: " + std::strerror(errno));
  struct stat st {};
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
  std::vector<float> colbert;     // rows x dim, normalised
  std::vector<float> norms;       // ||C_i|| before normalisation
  std::vector<float> colbert_grad;  // d(loss)/d(colbert)
};

double Dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

void Axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

/// Lexical weights of a text with the position of each id's max (M3-SEMANTICS.md: ids 0..3 and
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

HeadTrainer::HeadTrainer(std::shared_ptr<const HiddenStateCache> cache, int64_t dim, std::vector<float> params, int threads)
    : cache_(std::move(cache)), threads_(std::max(1, threads)) {
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
  const float* sw = params_.data() + L.sparse_w();
  const float sb = params_[L.sparse_b()];
  const PackedLinear colbert_head = PackLinear(params_.data() + L.colbert_w(), params_.data() + L.colbert_b(), D, H);

  // Forward: queries first, then passages.
  std::vector<TextForward> f(static_cast<size_t>(Q + P));
  ParallelFor(Q + P, threads_, [&](int64_t k, int) {
    TextForward& x = f[k];
    x.text = k < Q ? queries[k] : passages[k - Q];
    const int64_t n = cache_->length(x.text);
    const float* h = cache_->rows(x.text);
    const int32_t* ids = cache_->ids(x.text);
    x.dense.assign(h, h + H);
    const double norm = std::sqrt(Dot(h, h, H));
    for (float& v : x.dense) v = static_cast<float>(v / std::max(norm, 1e-12));
    std::vector<float> w(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) w[t] = std::max(0.0f, static_cast<float>(Dot(h + t * H, sw, H) + sb));
    Lexical(ids, w.data(), n, &x);
    x.rows = n - 1;
    x.colbert.resize(static_cast<size_t>(x.rows * D));
    x.norms.resize(static_cast<size_t>(x.rows));
    LinearForward(colbert_head, h + H, x.rows, H, x.colbert.data(), D);
    for (int64_t i = 0; i < x.rows; ++i) {
      float* row = x.colbert.data() + i * D;
      const double r = std::sqrt(Dot(row, row, D));
      x.norms[i] = static_cast<float>(r);
      const double inv = 1.0 / std::max(r, 1e-12);
      for (int64_t d = 0; d < D; ++d) row[d] = static_cast<float>(row[d] * inv);
    }
  });

  // Scores. ColBERT: every query row against all passage rows at once, then the max per passage.
  std::vector<float> s_dense(Q * P), s_lex(Q * P), s_colbert(Q * P);
  std::vector<int64_t> p_first(P + 1, 0);
  for (int64_t p = 0; p < P; ++p) p_first[p + 1] = p_first[p] + f[Q + p].rows;
  const int64_t all_rows = p_first[P];
  std::vector<float> passage_rows(static_cast<size_t>(all_rows * D));
  for (int64_t p = 0; p < P; ++p)
    std::memcpy(passage_rows.data() + p_first[p] * D, f[Q + p].colbert.data(), f[Q + p].colbert.size() * sizeof(float));
  const PackedLinear packed_passages = PackLinear(passage_rows.data(), nullptr, all_rows, D);
  std::vector<std::vector<int32_t>> argmax(static_cast<size_t>(Q * P));  // per (q, p): best passage row of each query row
  ParallelFor(Q, threads_, [&](int64_t q, int) {
    const TextForward& x = f[q];
    constexpr int64_t kChunk = 16;
    std::vector<float> sims(static_cast<size_t>(kChunk * all_rows));
    std::vector<double> sum(P, 0.0);
    for (int64_t p = 0; p < P; ++p) argmax[q * P + p].resize(x.rows);
    for (int64_t i0 = 0; i0 < x.rows; i0 += kChunk) {
      const int64_t m = std::min(kChunk, x.rows - i0);
      LinearForward(packed_passages, x.colbert.data() + i0 * D, m, D, sims.data(), all_rows);
      for (int64_t i = 0; i < m; ++i) {
        const float* s = sims.data() + i * all_rows;
        for (int64_t p = 0; p < P; ++p) {
          int64_t best = p_first[p];
          for (int64_t j = p_first[p] + 1; j < p_first[p + 1]; ++j)
            if (s[j] > s[best]) best = j;
          sum[p] += s[best];
          argmax[q * P + p][i0 + i] = static_cast<int32_t>(best - p_first[p]);
        }
      }
    }
    for (int64_t p = 0; p < P; ++p) {
      const TextForward& y = f[Q + p];
      s_colbert[q * P + p] = static_cast<float>(sum[p] / static_cast<double>(x.rows));
      s_dense[q * P + p] = static_cast<float>(Dot(x.dense.data(), y.dense.data(), H));
      double lex = 0;
      ForShared(x, y, [&](size_t a, size_t b) { lex += static_cast<double>(x.lex_w[a]) * y.lex_w[b]; });
      s_lex[q * P + p] = static_cast<float>(lex);
    }
  });

  StepResult result;
  result.loss = M3Loss(s_dense.data(), s_lex.data(), s_colbert.data(), target.data(), Q, P, o.loss);
  result.grad.assign(static_cast<size_t>(L.size()), 0.0f);
  const std::vector<double>& g_lex = result.loss.grad_lex;
  const std::vector<double>& g_col = result.loss.grad_colbert;

  if (o.train_sparse) {
    // d(loss)/d(lexical weight) per text and id; queries and passages in separate passes so no
    // two threads write the same text.
    for (auto& x : f) x.lex_grad.assign(x.lex_w.size(), 0.0f);
    ParallelFor(Q + P, threads_, [&](int64_t k, int) {
      TextForward& x = f[k];
      if (k < Q) {
        for (int64_t p = 0; p < P; ++p) {
          const float g = static_cast<float>(g_lex[k * P + p]);
          if (g != 0.0f) ForShared(x, f[Q + p], [&](size_t a, size_t b) { x.lex_grad[a] += g * f[Q + p].lex_w[b]; });
        }
      } else {
        const int64_t p = k - Q;
        for (int64_t q = 0; q < Q; ++q) {
          const float g = static_cast<float>(g_lex[q * P + p]);
          if (g != 0.0f) ForShared(f[q], x, [&](size_t a, size_t b) { x.lex_grad[b] += g * f[q].lex_w[a]; });
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
        if (g == 0.0) continue;
        const float* row = h + static_cast<int64_t>(x.lex_pos[k]) * H;
        for (int64_t d = 0; d < H; ++d) gw[d] += g * row[d];
        gb += g;
      }
    }
    for (int64_t d = 0; d < H; ++d) result.grad[L.sparse_w() + d] = static_cast<float>(gw[d]);
    result.grad[L.sparse_b()] = static_cast<float>(gb);
  }

  if (o.train_colbert) {
    // d(loss)/d(normalised rows) through the mean of maxima.
    for (auto& x : f) x.colbert_grad.assign(x.colbert.size(), 0.0f);
    ParallelFor(Q + P, threads_, [&](int64_t k, int) {
      TextForward& x = f[k];
      if (k < Q) {
        for (int64_t p = 0; p < P; ++p) {
          const float c = static_cast<float>(g_col[k * P + p] / static_cast<double>(x.rows));
          if (c == 0.0f) continue;
          const auto& best = argmax[k * P + p];
          for (int64_t i = 0; i < x.rows; ++i) Axpy(c, f[Q + p].colbert.data() + best[i] * D, x.colbert_grad.data() + i * D, D);
        }
      } else {
        const int64_t p = k - Q;
        for (int64_t q = 0; q < Q; ++q) {
          const float c = static_cast<float>(g_col[q * P + p] / static_cast<double>(f[q].rows));
          if (c == 0.0f) continue;
          const auto& best = argmax[q * P + p];
          for (int64_t i = 0; i < f[q].rows; ++i) Axpy(c, f[q].colbert.data() + i * D, x.colbert_grad.data() + best[i] * D, D);
        }
      }
    });
    // Through the L2 normalisation: dC = (dE - E (E . dE)) / ||C||, stacked as dCᵀ [D x rows]
    // next to the hidden rows that produced them, so dW = dCᵀ · H is one matrix product.
    int64_t rows = 0;
    for (const auto& x : f) rows += x.rows;
    std::vector<float> dct(static_cast<size_t>(D * rows));
    PackedLinear stacked;  // "weight" whose packed form is the hidden rows themselves: wt[r] = H row r
    stacked.in = rows;
    stacked.out = H;
    stacked.out_padded = (H + kLinearColumnBlock - 1) / kLinearColumnBlock * kLinearColumnBlock;
    stacked.wt.assign(static_cast<size_t>(rows * stacked.out_padded), 0.0f);
    stacked.bias.assign(static_cast<size_t>(stacked.out_padded), 0.0f);
    std::vector<double> gb(static_cast<size_t>(D), 0.0);
    int64_t r0 = 0;
    for (const auto& x : f) {
      const float* h = cache_->rows(x.text) + H;  // ColBERT rows start at token 1
      for (int64_t i = 0; i < x.rows; ++i) {
        const float* e = x.colbert.data() + i * D;
        const float* de = x.colbert_grad.data() + i * D;
        const double proj = Dot(e, de, D);
        const double inv = 1.0 / std::max<double>(x.norms[i], 1e-12);
        for (int64_t d = 0; d < D; ++d) {
          const double dc = (de[d] - e[d] * proj) * inv;
          dct[d * rows + r0 + i] = static_cast<float>(dc);
          gb[d] += dc;
        }
        std::memcpy(stacked.wt.data() + (r0 + i) * stacked.out_padded, h + i * H, H * sizeof(float));
      }
      r0 += x.rows;
    }
    float* gw = result.grad.data() + L.colbert_w();
    const int64_t per = std::max<int64_t>(8, (D + threads_ - 1) / threads_);
    ParallelFor((D + per - 1) / per, threads_, [&](int64_t part, int) {
      const int64_t d0 = part * per, d1 = std::min(D, d0 + per);
      LinearForward(stacked, dct.data() + d0 * rows, d1 - d0, rows, gw + d0 * H, H);
    });
    for (int64_t d = 0; d < D; ++d) result.grad[L.colbert_b() + d] = static_cast<float>(gb[d]);
  }

  double sq = 0;
  for (float g : result.grad) sq += static_cast<double>(g) * g;
  result.grad_norm = std::sqrt(sq);
  if (o.update) Adam(result.grad, o);
  return result;
}

void HeadTrainer::Adam(const std::vector<float>& grad, const StepOptions& o) {
  ++t_;
  const double c1 = 1.0 - std::pow(o.beta1, static_cast<double>(t_));
  const double c2 = 1.0 - std::pow(o.beta2, static_cast<double>(t_));
  auto update = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double g = grad[i];
      const double m = o.beta1 * m_[i] + (1.0 - o.beta1) * g;
      const double v = o.beta2 * v_[i] + (1.0 - o.beta2) * g * g;
      m_[i] = static_cast<float>(m);
      v_[i] = static_cast<float>(v);
      const double step = (m / c1) / (std::sqrt(v / c2) + o.eps) + o.weight_decay * params_[i];
      params_[i] = static_cast<float>(params_[i] - o.lr * step);
    }
  };
  if (o.train_sparse) update(layout_.sparse_w(), layout_.colbert_w());
  if (o.train_colbert) update(layout_.colbert_w(), layout_.size());
}

}  // namespace m3
