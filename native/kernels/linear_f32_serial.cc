// The oracle: plain loops, accumulating in the same order (k ascending) as the vector kernels.
#include "kernels/linear_f32.h"

namespace m3 {

void LinearForwardSerial(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                         float* y, int64_t y_stride) {
  const int64_t n = layer.out_padded;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * x_stride;
    float* yr = y + r * y_stride;
    for (int64_t o = 0; o < layer.out; ++o) {
      float acc = 0.0f;
      for (int64_t k = 0; k < layer.in; ++k) acc += xr[k] * layer.wt[k * n + o];
      yr[o] = acc + layer.bias[o];
    }
  }
}

}  // namespace m3
