// Weight tensors loaded from the head files of a model directory (colbert_linear.pt,
// sparse_linear.safetensors, ...), plus the pieces the .pt and .safetensors readers share.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace m3 {

/// A dense tensor, always fp32 and row-major contiguous whatever the file stored, so the heads
/// never branch on dtype or strides. `data.size()` is the product of `shape` (1 for a scalar).
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

/// Parameter name (e.g. "weight", "bias") to tensor, as in a PyTorch state dict.
using StateDict = std::map<std::string, Tensor>;

/// Loads a state dict from `path`, choosing the reader by content rather than by extension:
/// a zip archive is read as a torch.save() file, anything starting with a safetensors header
/// as .safetensors. Throws CoreError("ERR_MODEL_FILES") for unreadable, corrupted, refused or
/// unrecognised files (including the legacy pre-1.6 torch format) with a message naming `path`.
StateDict LoadTensorFile(const std::string& path);

/// Same as LoadTensorFile on bytes already in memory; `source_name` stands for the file in
/// error messages.
StateDict LoadTensorFileFromBytes(const std::vector<uint8_t>& bytes,
                                  const std::string& source_name);

namespace weights {

/// Element types the readers convert from. Both torch and safetensors store little-endian.
enum class ScalarType { kFloat16, kBFloat16, kFloat32, kFloat64 };

/// Bytes per element of `type`.
size_t ItemSize(ScalarType type);

/// Short dtype name for messages ("float16", "bfloat16", "float32", "float64").
const char* ScalarTypeName(ScalarType type);

/// Decodes one little-endian element of `type` at `src` to float (fp64 is rounded to nearest).
float DecodeElement(ScalarType type, const uint8_t* src);

/// Decodes `count` consecutive little-endian elements of `type` from `src` into `dst`.
void DecodeElements(ScalarType type, const uint8_t* src, size_t count, float* dst);

/// Sets `*product` to a*b and returns true, or returns false when it would exceed `limit`
/// (so a corrupted file's sizes can never wrap around or force a huge allocation).
bool MultiplyWithin(uint64_t a, uint64_t b, uint64_t limit, uint64_t* product);

/// Reads a whole regular file into memory; throws CoreError("ERR_MODEL_FILES") naming `path`
/// when it is missing, not a regular file, or unreadable.
std::vector<uint8_t> ReadFileBytes(const std::string& path);

/// Most fp32 elements one file may expand to across all its tensors. Views of a shared storage
/// and stride-0 (expanded) tensors can legitimately exceed the storage size a little, but a
/// crafted file must not turn a few bytes into gigabytes.
uint64_t OutputElementBudget(uint64_t file_size);

}  // namespace weights
}  // namespace m3
