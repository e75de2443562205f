#include "kernels/linear_bf16.h"

#include <algorithm>
#include <vector>

#include "kernels/quantize.h"

namespace m3 {

PackedLinearBf16 PackLinearBf16(const float* w, const float* b, int64_t in, int64_t out) {
  PackedLinearBf16 p;
  p.in = in;
  p.out = out;
  p.pairs = (in + 1) / 2;
  p.panels = (out + kBf16Panel - 1) / kBf16Panel;
  p.w.assign(static_cast<size_t>(p.panels * p.pairs * 2 * kBf16Panel), 0);
  for (int64_t panel = 0; panel < p.panels; ++panel) {
    uint16_t* dst = p.w.data() + panel * p.pairs * 2 * kBf16Panel;
    const int64_t c0 = panel * kBf16Panel, cols = std::min(kBf16Panel, out - c0);
    for (int64_t k = 0; k < in; ++k) {
      const float* src = w + k * out + c0;
      uint16_t* pair = dst + (k / 2) * 2 * kBf16Panel + (k & 1);
      for (int64_t c = 0; c < cols; ++c) pair[2 * c] = FloatToBf16(src[c]);
    }
  }
  p.bias.assign(static_cast<size_t>(out), 0.0f);
  if (b) std::copy(b, b + out, p.bias.begin());
  return p;
}

bool LinearBf16Accelerated() { return ActiveTier() == IsaTier::kAvx512 && DetectCpuFeatures().avx512_bf16; }

namespace {

int64_t RowBlocks(const LinearBf16Args& a) { return (a.rows + kBf16RowBlock - 1) / kBf16RowBlock; }
int64_t PanelsPerUnit(const LinearBf16Args& a) { return RowBlocks(a) >= 8 ? kBf16PanelsPerUnit : 1; }
int64_t PanelGroups(const LinearBf16Args& a) {
  return (a.layer->panels + PanelsPerUnit(a) - 1) / PanelsPerUnit(a);
}

/// The oracle: every product of the rounded values in fp32 (exact), summed in input order.
void BlockSerial(const LinearBf16Args& a, int64_t r0, int64_t r1, int64_t p0, int64_t p1) {
  const PackedLinearBf16& l = *a.layer;
  std::vector<float> x(static_cast<size_t>(l.in));
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t k = 0; k < l.in; ++k) x[k] = Bf16ToFloat(FloatToBf16(a.x[r * l.in + k]));
    float* y = a.y + r * l.out;
    for (int64_t panel = p0; panel < p1; ++panel) {
      const uint16_t* w = l.panel(panel);
      const int64_t c0 = panel * kBf16Panel, cols = std::min(kBf16Panel, l.out - c0);
      for (int64_t c = 0; c < cols; ++c) {
        float acc = 0.0f;
        for (int64_t k = 0; k < l.in; ++k) {
          acc += x[k] * Bf16ToFloat(w[(k / 2) * 2 * kBf16Panel + 2 * c + (k & 1)]);
        }
        y[c0 + c] = acc + l.bias[c0 + c];
      }
    }
  }
}

}  // namespace

int64_t LinearBf16UnitCount(const LinearBf16Args& a) { return RowBlocks(a) * PanelGroups(a); }

int64_t LinearBf16ScratchElems(const LinearBf16Args& a) {
  return kBf16RowBlock * std::min<int64_t>(kBf16KChunk, 2 * a.layer->pairs);
}

void LinearBf16RunUnit(bool vector, const LinearBf16Args& a, int64_t unit, uint16_t* scratch) {
  const int64_t groups = PanelGroups(a);
  const int64_t rb = unit / groups, pg = unit % groups;
  const int64_t r0 = rb * kBf16RowBlock, r1 = std::min(a.rows, r0 + kBf16RowBlock);
  const int64_t p0 = pg * PanelsPerUnit(a), p1 = std::min(a.layer->panels, p0 + PanelsPerUnit(a));
  if (vector) LinearBf16BlockAvx512(a, r0, r1, p0, p1, scratch);
  else BlockSerial(a, r0, r1, p0, p1);
}

void LinearBf16Forward(bool vector, const LinearBf16Args& a) {
  std::vector<uint16_t> scratch(static_cast<size_t>(LinearBf16ScratchElems(a)));
  const int64_t units = LinearBf16UnitCount(a);
  for (int64_t u = 0; u < units; ++u) LinearBf16RunUnit(vector, a, u, scratch.data());
}

}  // namespace m3
