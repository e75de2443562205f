// The oracle: plain loops, accumulating in the same order (k ascending) as the vector kernels.
#include "kernels/linear_f32.h"

namespace m3 {

void LinearForwardSerial(const PackedLinear& layer, const float* x, int64_t rows, int64_t x_stride,
                         float* y, int64_t y_stride) {
  constexpr int64_t B = kLinearColumnBlock;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * x_stride;
    float* yr = y + r * y_stride;
    for (int64_t o = 0; o < layer.out; ++o) {
      float acc = 0.0f;
      const float* panel = layer.panel(o - o % B) + o % B;
      for (int64_t k = 0; k < layer.in; ++k) acc += xr[k] * panel[k * B];
      yr[o] = acc + layer.bias[o];
    }
  }
}

}  // namespace m3
