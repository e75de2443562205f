// Internal interface between the MaxSim driver (maxsim.cc) and its per-ISA kernels
// (maxsim_<isa>.cc). The driver packs the query once per call in the layout the tier wants;
// a kernel turns one document's rows into the max dot product per query row.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/maxsim.h"

namespace m3 {
namespace maxsim {

/// A query packed for one tier and one document format.
/// - serial: `f32` row-major [nq][dim] (bf16-rounded for kBF16); kI8: `s8` [nq][dim].
/// - vector tiers ("transposed": lanes are query rows, so one document element broadcast
///   against a vector of query rows needs no horizontal reduction):
///     kF32:  f32 [dim][nq_pad]
///     kBF16: avx512: u16 [ceil(dim/2)][nq_pad][2] (vdpbf16ps pairs); avx2: f32 [dim][nq_pad]
///     kI8:   avx512: u8 [ceil(dim/4)][nq_pad][4] = s8 + 128 (vpdpbusd quads);
///            avx2: s16 [ceil(dim/2)][nq_pad][2] (vpmaddwd pairs)
/// kI8 also has per-row `scales` (nq_pad, padding rows 0).
struct PackedQuery {
  VectorFormat format = VectorFormat::kF32;
  int64_t nq = 0, dim = 0, nq_pad = 0;
  std::vector<float> f32;
  std::vector<uint16_t> u16;
  std::vector<uint8_t> u8;
  std::vector<int8_t> s8;
  std::vector<int16_t> s16;
  std::vector<float> scales;
};

/// row_max[i] = max over document rows [row_begin, row_begin + rows) of the (format's) dot
/// product with query row i, for i < nq. rows >= 1. Returns false (row_max then undefined) when
/// the rows hold a NaN or infinity (kI8: a non-finite scale); the check rides along with the
/// scoring so the rows are read from memory once.
using RowMaxFn = bool (*)(const PackedQuery& q, const MultiVectorSet& docs, int64_t row_begin,
                          int64_t rows, float* row_max);
using PackFn = void (*)(const float* query, int64_t nq, int64_t dim, VectorFormat format, PackedQuery* out);

void PackSerial(const float* query, int64_t nq, int64_t dim, VectorFormat format, PackedQuery* out);
bool RowMaxSerial(const PackedQuery& q, const MultiVectorSet& docs, int64_t row_begin, int64_t rows, float* row_max);
/// True when rows [row_begin, row_begin + rows) hold only finite values (kI8: finite scales).
bool FiniteSerial(const MultiVectorSet& docs, int64_t row_begin, int64_t rows);
void PackAvx2(const float* query, int64_t nq, int64_t dim, VectorFormat format, PackedQuery* out);
bool RowMaxAvx2(const PackedQuery& q, const MultiVectorSet& docs, int64_t row_begin, int64_t rows, float* row_max);
bool FiniteAvx2(const MultiVectorSet& docs, int64_t row_begin, int64_t rows);
void PackAvx512(const float* query, int64_t nq, int64_t dim, VectorFormat format, PackedQuery* out);
bool RowMaxAvx512(const PackedQuery& q, const MultiVectorSet& docs, int64_t row_begin, int64_t rows, float* row_max);

/// Packs the query rows into the transposed layouts of the vector tiers (see PackedQuery),
/// for lane width `lanes` (16 for AVX-512, 8 for AVX2); `pairs_bf16` selects the vdpbf16ps
/// layout for kBF16 and `quads_u8` the vpdpbusd layout for kI8 (else s16 pairs).
void PackTransposed(const float* query, int64_t nq, int64_t dim, VectorFormat format, int64_t lanes,
                    bool pairs_bf16, bool quads_u8, PackedQuery* out);

/// Query rows quantized like documents: s8 values [nq][dim] and per-row scales (shared by
/// every tier, so the integer dot products are identical across tiers).
void QuantizeQueryI8(const float* query, int64_t nq, int64_t dim, std::vector<int8_t>* s8, std::vector<float>* scales);

}  // namespace maxsim
}  // namespace m3
