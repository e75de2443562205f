// Dense layer y = x · W + b with bf16 inputs and fp32 accumulation (the encoder's projections
// and feed-forward layers in `precision: 'bf16'`). W is an ONNX MatMul weight [in][out]; it is
// rounded to bf16 once, at pack time, and each call rounds x to bf16 (round to nearest even).
// Products of two bf16 values are exact in fp32, so the only rounding besides the inputs' is the
// fp32 accumulation. The AVX-512 BF16 kernel (`vdpbf16ps`) does twice the multiply-adds per
// instruction of an fp32 FMA; the serial kernel is the oracle.
#pragma once
#include <cstdint>
#include <vector>

#include "base/cpu_features.h"

namespace m3 {

/// Output columns per packed panel (four AVX-512 vectors of fp32 results).
constexpr int64_t kBf16Panel = 64;
/// Input features per pass over a panel (even: whole pairs).
constexpr int64_t kBf16KChunk = 512;
/// Rows of x per work unit, and panels per work unit (one when there are few row blocks, so a
/// short batch still spreads over many threads).
constexpr int64_t kBf16RowBlock = 96;
constexpr int64_t kBf16PanelsPerUnit = 4;

/// W packed in panels of kBf16Panel output columns: panel p, input pair kp holds, for each
/// column c of the panel, (W[2kp][64p + c], W[2kp + 1][64p + c]) as bf16 bits, so one 64-byte
/// load gives 16 columns' pairs. Missing columns and the second half of an odd last pair are 0.
struct PackedLinearBf16 {
  int64_t in = 0, out = 0, pairs = 0, panels = 0;
  std::vector<uint16_t> w;  // panels * pairs * 2 * kBf16Panel
  std::vector<float> bias;  // out entries (zero without a bias)
  const uint16_t* panel(int64_t p) const { return w.data() + p * pairs * 2 * kBf16Panel; }
};

/// Packs an ONNX MatMul weight w [in][out] (row-major, fp32) and bias b [out] (may be null).
PackedLinearBf16 PackLinearBf16(const float* w, const float* b, int64_t in, int64_t out);

/// True when this CPU, at the active tier, has the vector kernel (AVX-512 with BF16).
bool LinearBf16Accelerated();

/// One call: y [rows][out] = x [rows][in] · W + b, rows contiguous.
struct LinearBf16Args {
  const PackedLinearBf16* layer = nullptr;
  const float* x = nullptr;
  float* y = nullptr;
  int64_t rows = 0;
};

/// Work units of a call (row blocks x panel groups); each writes its own part of y.
int64_t LinearBf16UnitCount(const LinearBf16Args& a);
/// uint16_t elements of per-thread scratch a unit needs.
int64_t LinearBf16ScratchElems(const LinearBf16Args& a);
/// Runs one unit with the vector kernel when `vector` (LinearBf16Accelerated()), else serially.
void LinearBf16RunUnit(bool vector, const LinearBf16Args& a, int64_t unit, uint16_t* scratch);

/// The whole call on one thread (tests and benchmarks).
void LinearBf16Forward(bool vector, const LinearBf16Args& a);

/// Rounds `rows` rows of x (x_stride floats apart) to bf16, `cols` values each, into rows of
/// `out_stride` (>= cols, even) elements, the rest 0. AVX-512 BF16 only (LinearBf16Accelerated()).
void RoundRowsBf16Avx512(const float* x, int64_t x_stride, int64_t rows, int64_t cols, int64_t out_stride, uint16_t* out);

/// Interleaves two rows a, b of n floats as bf16 pairs: out[2c] = a[c], out[2c + 1] = b[c] (b null:
/// 0), for c < n rounded up to 16 (the values past n are 0). AVX-512 BF16 only.
void InterleaveBf16Avx512(const float* a, const float* b, int64_t n, uint16_t* out);

// The vector kernel (linear_bf16_avx512.cc): rows [r0, r1) x panels [p0, p1).
void LinearBf16BlockAvx512(const LinearBf16Args& a, int64_t r0, int64_t r1, int64_t p0, int64_t p1, uint16_t* scratch);

}  // namespace m3
