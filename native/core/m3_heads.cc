#include "core/m3_heads.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "core/pooling.h"
#include "weights/tensor_file.h"

namespace m3 {
namespace {

const Tensor& Require(const StateDict& dict, const std::string& key, const std::string& path) {
  auto it = dict.find(key);
  if (it == dict.end()) {
    std::string keys;
    for (const auto& kv : dict) keys += (keys.empty() ? "" : ", ") + kv.first;
    throw CoreError("ERR_MODEL_LAYOUT", "'" + path + "' has no '" + key + "' tensor (it holds: " +
                                            (keys.empty() ? std::string("nothing") : keys) +
                                            "). Expected a torch.nn.Linear state dict with 'weight' and 'bias'.");
  }
  return it->second;
}

void ExpectShape(const Tensor& t, const std::vector<int64_t>& want, const std::string& what,
                 const std::string& path) {
  if (t.shape != want) {
    throw CoreError("ERR_MODEL_LAYOUT", "'" + path + "': " + what + " has shape " + ShapeString(t.shape) +
                                            ", expected " + ShapeString(want) +
                                            " for an encoder whose hidden size is " +
                                            std::to_string(want.back()) + ".");
  }
}

// NaN or Inf in a head would reach every output as NaN, silently (and then poison an index).
void ExpectFinite(const Tensor& t, const std::string& what, const std::string& path) {
  for (size_t i = 0; i < t.data.size(); ++i) {
    if (!std::isfinite(t.data[i])) {
      throw CoreError("ERR_MODEL_FILES", "'" + path + "': " + what + " holds a non-finite value (" + std::to_string(t.data[i]) +
                                             " at element " + std::to_string(i) +
                                             "); the file is corrupted or came from a diverged training run. "
                                             "Use the head file that came with the model.");
    }
  }
}

}  // namespace

M3Heads LoadM3Heads(const std::string& colbert_path, const std::string& sparse_path, int64_t hidden) {
  M3Heads heads;
  heads.hidden = hidden;
  const StateDict colbert = LoadTensorFile(colbert_path);
  const Tensor& cw = Require(colbert, "weight", colbert_path);
  const Tensor& cb = Require(colbert, "bias", colbert_path);
  if (cw.shape.size() != 2 || cw.shape[1] != hidden || cw.shape[0] <= 0) {
    throw CoreError("ERR_MODEL_LAYOUT", "'" + colbert_path + "': weight has shape " + ShapeString(cw.shape) +
                                            ", expected [D, " + std::to_string(hidden) +
                                            "] (the encoder's hidden size is " + std::to_string(hidden) + ").");
  }
  heads.colbert_dim = cw.shape[0];
  ExpectShape(cb, {heads.colbert_dim}, "bias", colbert_path);
  ExpectFinite(cw, "weight", colbert_path);
  ExpectFinite(cb, "bias", colbert_path);
  heads.colbert = PackLinear(cw.data.data(), cb.data.data(), heads.colbert_dim, hidden);
  heads.colbert_weight = cw.data;
  heads.colbert_bias = cb.data;

  const StateDict sparse = LoadTensorFile(sparse_path);
  const Tensor& sw = Require(sparse, "weight", sparse_path);
  const Tensor& sb = Require(sparse, "bias", sparse_path);
  ExpectShape(sw, {1, hidden}, "weight", sparse_path);
  ExpectShape(sb, {1}, "bias", sparse_path);
  ExpectFinite(sw, "weight", sparse_path);
  ExpectFinite(sb, "bias", sparse_path);
  heads.sparse_weight = sw.data;
  heads.sparse_bias = sb.data[0];
  return heads;
}

void SparseTokenWeights(const M3Heads& heads, const float* h, int64_t n, int64_t stride, float* out) {
  const float* w = heads.sparse_weight.data();
  for (int64_t t = 0; t < n; ++t) {
    const float* row = h + t * stride;
    float acc = 0.0f;
    for (int64_t k = 0; k < heads.hidden; ++k) acc += row[k] * w[k];
    out[t] = std::max(acc + heads.sparse_bias, 0.0f);
  }
}

void ColbertRows(const M3Heads& heads, const float* h, int64_t n, int64_t stride, float* out) {
  if (n <= 0) return;
  LinearForward(heads.colbert, h, n, stride, out, heads.colbert_dim);
  for (int64_t t = 0; t < n; ++t) NormalizeL2(out + t * heads.colbert_dim, heads.colbert_dim);
}

}  // namespace m3
