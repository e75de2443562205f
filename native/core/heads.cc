#include "core/heads.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "base/parallel_for.h"
#include "core/ort_values.h"
#include "core/pooling.h"

namespace m3 {
namespace {

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::vector<const char*> GraphOutputNames(const EncoderSession& session, OutputSet outputs) {
  if (session.kind() == GraphKind::kHiddenState) return {session.hidden_output().c_str()};
  std::vector<const char*> names;
  if (outputs.dense()) names.push_back(session.dense_output().c_str());
  if (outputs.sparse()) names.push_back(session.sparse_output().c_str());
  if (outputs.colbert()) names.push_back(session.colbert_output().c_str());
  return names;
}

void GraphHeads::Apply(const HeadsBatch& hb) const {
  const std::vector<Ort::Value> out = hb.run(false);
  const auto start = std::chrono::steady_clock::now();
  const EncodeRequest& request = hb.out.request();
  const OutputSet want = request.outputs;
  std::vector<float> widened[3];  // 16-bit float outputs as floats
  const float* dense = nullptr;
  const float* sparse = nullptr;
  const float* colbert = nullptr;
  size_t k = 0;
  if (want.dense()) dense = FloatData(out[k], &widened[k]), ++k;
  if (want.sparse()) sparse = FloatData(out[k], &widened[k]), ++k;
  if (want.colbert()) colbert = FloatData(out[k], &widened[k]);
  const int64_t len = hb.batch.len;
  LexicalScratch scratch;
  for (int64_t b = 0; b < hb.batch.batch; ++b) {
    const uint32_t text = hb.batch.text(request, b);
    const int64_t n = request.length(text);
    if (dense) std::memcpy(hb.out.dense_row(text), dense + b * dim_, dim_ * sizeof(float));
    if (sparse) hb.out.SetSparse(text, sparse + b * len, &scratch);
    if (colbert) std::memcpy(hb.out.colbert_rows(text), colbert + b * (len - 1) * dim_, (n - 1) * dim_ * sizeof(float));
  }
  hb.out.stats().heads_ms += MillisecondsSince(start);
}

void CpuHeads::Apply(const HeadsBatch& hb) const { ApplyTo(hb.run(false), hb); }

void CpuHeads::ApplyTo(const std::vector<Ort::Value>& out, const HeadsBatch& hb) const {
  const auto start = std::chrono::steady_clock::now();
  const EncodeRequest& request = hb.out.request();
  const OutputSet want = request.outputs;
  const int64_t len = hb.batch.len, hidden = weights_.hidden, dim = weights_.colbert_dim;
  std::vector<float> widened;
  const float* states = FloatData(out[0], &widened);
  // Per-worker scratch: the heads run in parallel over the texts of a batch.
  struct Scratch {
    LexicalScratch pairs;
    std::vector<float> token_weights;
  };
  // The ColBERT head dominates: spread it over the session's threads once it is worth a
  // thread start (about a millisecond of work per thread).
  const double macs = want.colbert() ? static_cast<double>(hb.batch.batch) * len * hidden * dim : 0.0;
  const int threads = static_cast<int>(std::min<double>(threads_, std::max(1.0, macs / 2e7)));
  std::vector<Scratch> scratch(static_cast<size_t>(threads));
  ParallelFor(hb.batch.batch, threads, [&](int64_t b, int worker) {
    Scratch& mine = scratch[worker];
    const uint32_t text = hb.batch.text(request, b);
    const int64_t n = request.length(text);
    const float* h = states + b * len * hidden;
    if (want.hidden()) std::memcpy(hb.out.hidden_rows(text), h, n * hidden * sizeof(float));
    if (want.dense()) {
      float* dst = hb.out.dense_row(text);
      std::memcpy(dst, h, dim * sizeof(float));
      NormalizeL2(dst, dim);
    }
    if (want.sparse()) {
      mine.token_weights.resize(n);
      SparseTokenWeights(weights_, h, n, hidden, mine.token_weights.data());
      hb.out.SetSparse(text, mine.token_weights.data(), &mine.pairs);
    }
    if (want.colbert()) ColbertRows(weights_, h + hidden, n - 1, hidden, hb.out.colbert_rows(text));
  });
  hb.out.stats().heads_ms += MillisecondsSince(start);
}

}  // namespace m3
