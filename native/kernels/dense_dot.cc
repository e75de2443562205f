#include "kernels/dense_dot.h"

#include <immintrin.h>

// GCC 12 reports its own _mm512_undefined_ps() inside the masked-load intrinsics as maybe
// uninitialized; the warning is about the header, not this code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace m3 {
namespace {

__attribute__((target("avx512f,fma"))) void ScoresAvx512(const float* q, const float* matrix, int64_t rows,
                                                         int64_t dim, float* out) {
  const int64_t full = dim / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (dim - full)) - 1);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = matrix + r * dim;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= full; k += 32) {
      acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + k), _mm512_loadu_ps(row + k), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + k + 16), _mm512_loadu_ps(row + k + 16), acc1);
    }
    for (; k < full; k += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + k), _mm512_loadu_ps(row + k), acc0);
    if (tail) acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q + full), _mm512_maskz_loadu_ps(tail, row + full), acc1);
    out[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  }
}

void ScoresSerial(const float* q, const float* matrix, int64_t rows, int64_t dim, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    float acc = 0.0f;
    for (int64_t k = 0; k < dim; ++k) acc += q[k] * matrix[r * dim + k];
    out[r] = acc;
  }
}

}  // namespace

void DenseScores(const float* q, const float* matrix, int64_t rows, int64_t dim, float* out) {
  if (ActiveTier() == IsaTier::kAvx512) ScoresAvx512(q, matrix, rows, dim, out);
  else ScoresSerial(q, matrix, rows, dim, out);
}

double DenseDotExact(const float* a, const float* b, int64_t dim) {
  double sum = 0.0;
  for (int64_t k = 0; k < dim; ++k) sum += static_cast<double>(a[k]) * b[k];
  return sum;
}

}  // namespace m3
