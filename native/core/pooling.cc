#include "core/pooling.h"

#include <algorithm>
#include <cmath>

namespace m3 {

void NormalizeL2(float* x, int64_t dim) {
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float norm = std::max(static_cast<float>(std::sqrt(sum)), 1e-12f);
  for (int64_t i = 0; i < dim; ++i) x[i] /= norm;
}

void AggregateLexicalWeights(const int32_t* token_ids, const float* token_weights, int64_t n,
                             int64_t weight_stride, std::vector<uint32_t>* ids,
                             std::vector<float>* weights,
                             std::vector<std::pair<uint32_t, float>>* scratch) {
  scratch->clear();
  for (int64_t t = 0; t < n; ++t) {
    const int32_t id = token_ids[t];
    const float w = token_weights[t * weight_stride];
    if (id <= 3 || !(w > 0.0f)) continue;  // special tokens, ReLU zeros (and NaN) carry no weight
    scratch->emplace_back(static_cast<uint32_t>(id), w);
  }
  std::sort(scratch->begin(), scratch->end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < scratch->size();) {
    const uint32_t id = (*scratch)[i].first;
    float best = (*scratch)[i].second;
    for (++i; i < scratch->size() && (*scratch)[i].first == id; ++i) best = std::max(best, (*scratch)[i].second);
    ids->push_back(id);
    weights->push_back(best);
  }
}

}  // namespace m3
