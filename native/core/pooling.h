// BGE-M3's three pooled outputs from per-token values (docs/semantics.md): the L2 normalisation
// used by the dense and ColBERT outputs, and the max-per-token aggregation of lexical weights.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

namespace m3 {

/// x / max(||x||_2, 1e-12), in place (torch.nn.functional.normalize).
void NormalizeL2(float* x, int64_t dim);

/// Lexical weights of one text: for each token id other than <s>, <pad>, </s>, <unk> (0..3) whose
/// weight is > 0, the max weight over its positions. Appends (id, weight) pairs to `ids` and
/// `weights` in ascending id order, ids unique. `scratch` is reused between calls.
void AggregateLexicalWeights(const int32_t* token_ids, const float* token_weights, int64_t n,
                             int64_t weight_stride, std::vector<uint32_t>* ids,
                             std::vector<float>* weights,
                             std::vector<std::pair<uint32_t, float>>* scratch);

}  // namespace m3
