// Reader for the .safetensors format: an 8-byte little-endian header length, a JSON header
// mapping tensor names to {dtype, shape, data_offsets}, then the raw little-endian data.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "weights/tensor_file.h"

namespace m3 {

/// Loads every tensor of the .safetensors file at `path`, converted to fp32. Accepts dtypes
/// F16, BF16, F32 and F64; ignores `__metadata__`. Throws CoreError("ERR_MODEL_FILES") naming
/// the file (and tensor) for a malformed header, an unsupported dtype, data offsets outside the
/// file, a byte range whose size does not match the shape, and for tensors that overlap or leave
/// bytes uncovered: their byte ranges must tile the data section exactly.
StateDict LoadSafetensors(const std::string& path);

/// Same as LoadSafetensors on bytes already in memory; `source_name` names them in errors.
StateDict LoadSafetensorsFromBytes(const std::vector<uint8_t>& bytes,
                                   const std::string& source_name);

}  // namespace m3
