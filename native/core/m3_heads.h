// The sparse and ColBERT heads of the BAAI/bge-m3 snapshot, which ship outside the ONNX graph as
// colbert_linear.pt / sparse_linear.pt (or .safetensors) and are applied here to the encoder's
// last_hidden_state.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/linear_f32.h"

namespace m3 {

struct M3Heads {
  int64_t hidden = 0;       // input width of both heads
  int64_t colbert_dim = 0;  // output width of the ColBERT head
  PackedLinear colbert;
  std::vector<float> colbert_weight;  // [colbert_dim x hidden] as loaded (the GPU heads upload it)
  std::vector<float> colbert_bias;    // [colbert_dim]
  std::vector<float> sparse_weight;   // [hidden]
  float sparse_bias = 0.0f;
};

/// Loads both heads and checks their shapes (colbert weight [D, hidden], bias [D]; sparse weight
/// [1, hidden], bias [1]). `hidden` is the encoder's width. Throws CoreError(ERR_MODEL_FILES) for
/// unreadable files and CoreError(ERR_MODEL_LAYOUT) for wrong keys or shapes, naming the file.
M3Heads LoadM3Heads(const std::string& colbert_path, const std::string& sparse_path, int64_t hidden);

/// ReLU(h_t · w + b) for n rows of `hidden` floats, `stride` floats apart.
void SparseTokenWeights(const M3Heads& heads, const float* h, int64_t n, int64_t stride, float* out);

/// ColBERT rows: normalize(h_t · Wᵀ + b) for n rows, written densely (colbert_dim apart).
void ColbertRows(const M3Heads& heads, const float* h, int64_t n, int64_t stride, float* out);

}  // namespace m3
