// Half-precision conversions: IEEE 754 binary16 (fp16) and bfloat16 to and from fp32. Used by
// the weight readers (fp16/bf16 tensors), the encoder (fp16/bf16 graph outputs) and the kernels
// (bf16 storage of ColBERT vectors and weights).
#pragma once
#include <cstddef>
#include <cstdint>

namespace m3 {

/// fp32 -> bf16 bits with round-to-nearest-even; NaN stays NaN (quiet), infinities stay.
uint16_t FloatToBf16(float x);

/// bf16 bits -> fp32 (exact: bfloat16 is the upper half of a binary32).
float Bf16ToFloat(uint16_t bits);

/// IEEE 754 binary16 bits to float; exact for every input (subnormals, ±0, ±inf), and NaN
/// payloads are kept so a round trip through fp16 stays bit-identical.
float HalfBitsToFloat(uint16_t bits);

/// fp32 -> binary16 bits with round-to-nearest-even. A finite value beyond the fp16 range
/// becomes +-65504 (the largest finite half) rather than infinity, and sets *clamped when given;
/// infinities stay infinite and NaN stays NaN (quiet); values below the smallest subnormal
/// round to signed zero.
uint16_t FloatToHalfBits(float x, bool* clamped = nullptr);

/// `count` binary16 values (native byte order) to float, as HalfBitsToFloat does (with the
/// F16C instructions where the CPU has them, which quiet a signalling NaN).
void WidenHalfs(const uint16_t* src, size_t count, float* dst);

/// `count` bfloat16 values (native byte order) to float, exactly.
void WidenBf16s(const uint16_t* src, size_t count, float* dst);

}  // namespace m3
