// Inner products of one query vector with many stored vectors (the dense retrieval route).
#pragma once
#include <cstdint>

#include "base/cpu_features.h"

namespace m3 {

/// out[r] = <q, matrix[r]> for r in [0, rows); matrix rows are `dim` floats, contiguous.
/// fp32 accumulation (the route only ranks; final scores are recomputed exactly).
void DenseScores(const float* q, const float* matrix, int64_t rows, int64_t dim, float* out);

/// <a, b> accumulated in double in index order: bitwise the same as a JS loop over Float32Arrays.
double DenseDotExact(const float* a, const float* b, int64_t dim);

}  // namespace m3
