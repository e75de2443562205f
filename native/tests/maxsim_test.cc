// MaxSim kernels on every tier against the serial oracle and a float64 reference, on random
// shapes (odd dims, 1..64 query rows, 0..600 document rows, empty documents), for fp32, bf16 and
// int8 storage; int8 must agree bitwise across tiers and every format across thread counts.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "base/error.h"
#include "kernels/maxsim.h"
#include "kernels/quantize.h"

namespace {

int failures = 0;

void Expect(bool ok, const char* what, double a, double b) {
  if (!ok && failures++ < 20) std::printf("FAIL %s: %.9g vs %.9g\n", what, a, b);
}

std::vector<float> RandomUnitRows(std::mt19937& rng, int64_t rows, int64_t dim) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * dim));
  for (int64_t r = 0; r < rows; ++r) {
    double norm = 0;
    for (int64_t k = 0; k < dim; ++k) norm += std::pow(x[r * dim + k] = normal(rng), 2);
    for (int64_t k = 0; k < dim; ++k) x[r * dim + k] = static_cast<float>(x[r * dim + k] / std::sqrt(norm));
  }
  return x;
}

double Reference(const float* q, int64_t nq, const float* d, int64_t nd, int64_t dim) {
  if (nq == 0 || nd == 0) return 0;
  double total = 0;
  for (int64_t i = 0; i < nq; ++i) {
    double best = -INFINITY;
    for (int64_t j = 0; j < nd; ++j) {
      double dot = 0;
      for (int64_t k = 0; k < dim; ++k) dot += static_cast<double>(q[i * dim + k]) * d[j * dim + k];
      best = std::max(best, dot);
    }
    total += best;
  }
  return total / nq;
}

void RunCase(std::mt19937& rng, int64_t dim, int64_t nq, const std::vector<uint32_t>& doc_rows) {
  std::vector<uint32_t> offsets{0};
  for (uint32_t n : doc_rows) offsets.push_back(offsets.back() + n);
  const int64_t rows = offsets.back(), count = static_cast<int64_t>(doc_rows.size());
  const std::vector<float> q = RandomUnitRows(rng, nq, dim);
  const std::vector<float> d = RandomUnitRows(rng, rows, dim);
  std::vector<uint16_t> d16(d.size());
  m3::QuantizeBf16(d.data(), static_cast<int64_t>(d.size()), d16.data());
  std::vector<int8_t> d8(d.size());
  std::vector<float> scales(static_cast<size_t>(rows));
  m3::QuantizeI8(d.data(), rows, dim, d8.data(), scales.data());

  std::vector<double> ref(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) ref[i] = Reference(q.data(), nq, d.data() + offsets[i] * dim, doc_rows[i], dim);

  for (m3::VectorFormat format : {m3::VectorFormat::kF32, m3::VectorFormat::kBF16, m3::VectorFormat::kI8}) {
    m3::MultiVectorSet set;
    set.format = format;
    set.dim = dim;
    set.count = count;
    set.offsets = offsets.data();
    set.data = format == m3::VectorFormat::kF32 ? static_cast<const void*>(d.data())
               : format == m3::VectorFormat::kBF16 ? static_cast<const void*>(d16.data()) : static_cast<const void*>(d8.data());
    set.scales = scales.data();
    std::vector<float> oracle(static_cast<size_t>(count));
    m3::MaxSimOn(m3::IsaTier::kSerial, q.data(), nq, set, oracle.data(), 1);
    // Quantization error against the float64 reference (quantize.h's bounds, generously).
    double scale_q = 0, scale_d = 0;
    for (float x : q) scale_q = std::max<double>(scale_q, std::fabs(x) / 127);
    for (float s : scales) scale_d = std::max<double>(scale_d, s);
    const double bound = format == m3::VectorFormat::kF32 ? 1e-5
                         : format == m3::VectorFormat::kBF16 ? 3.92e-3 + 1e-5
                         : std::sqrt(double(dim)) * (scale_q + scale_d) / 2 + dim * scale_q * scale_d / 4 + 1e-5;
    for (int64_t i = 0; i < count; ++i) Expect(std::fabs(oracle[i] - ref[i]) <= bound, m3::VectorFormatName(format), oracle[i], ref[i]);
    for (m3::IsaTier tier : {m3::IsaTier::kAvx2, m3::IsaTier::kAvx512}) {
      if (tier > m3::DetectedTier()) continue;
      for (int threads : {1, 2, 3}) {
        std::vector<float> got(static_cast<size_t>(count));
        m3::MaxSimOn(tier, q.data(), nq, set, got.data(), threads);
        for (int64_t i = 0; i < count; ++i) {
          if (format == m3::VectorFormat::kI8) Expect(got[i] == oracle[i], "i8 bitwise across tiers", got[i], oracle[i]);
          else Expect(std::fabs(got[i] - oracle[i]) <= 2e-6 * std::sqrt(double(dim)) + 1e-6, m3::VectorFormatName(format), got[i], oracle[i]);
        }
        if (threads > 1) {
          std::vector<float> one(static_cast<size_t>(count));
          m3::MaxSimOn(tier, q.data(), nq, set, one.data(), 1);
          for (int64_t i = 0; i < count; ++i) Expect(one[i] == got[i], "threads bitwise", one[i], got[i]);
        }
      }
    }
  }
}

}  // namespace

int main() {
  std::mt19937 rng(1234);
  int cases = 0;
  for (int64_t dim : {1, 7, 15, 16, 17, 127, 1023, 1024}) {
    for (int64_t nq : {1, 5, 16, 17, 32, 33, 64}) {
      if (dim >= 1023 && nq != 32 && nq != 17) continue;
      std::vector<uint32_t> rows;
      std::uniform_int_distribution<uint32_t> size(0, dim >= 1023 ? 60 : 600);
      const int docs = dim >= 1023 ? 3 : 6;
      for (int i = 0; i < docs; ++i) rows.push_back(i == 1 ? 0 : size(rng));
      RunCase(rng, dim, nq, rows);
      ++cases;
    }
  }
  // Non-finite values are refused with ERR_INPUT.
  std::vector<float> q(4, 0.5f), d(8, 0.25f);
  d[5] = NAN;
  const uint32_t offsets[3] = {0, 1, 2};
  m3::MultiVectorSet set;
  set.dim = 4;
  set.count = 2;
  set.offsets = offsets;
  set.data = d.data();
  float scores[2];
  for (m3::IsaTier tier : {m3::IsaTier::kSerial, m3::IsaTier::kAvx2, m3::IsaTier::kAvx512}) {
    bool threw = false;
    try {
      m3::MaxSimOn(tier, q.data(), 1, set, scores, 1);
    } catch (const m3::CoreError& e) {
      threw = e.code() == "ERR_INPUT" && std::string(e.what()).find("document 1") != std::string::npos;
    }
    Expect(threw, "NaN refused naming document 1", 0, 0);
  }
  // PackRows (the GPU path's query upload) against FloatToBf16 element by element, with ties,
  // subnormals, signed zeros and the largest floats; padding zeroed; non-finite rows found.
  {
    const int64_t rows = 37, dim = 70, dim_pad = 80;
    std::vector<float> x(static_cast<size_t>(rows * dim));
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (auto& v : x) v = normal(rng);
    const float specials[] = {1e-40f, -1e-45f, -0.0f, 0.0f, 3.4028235e38f, -3.4028235e38f, 1.00390625f, 1.01171875f, 65504.0f};
    for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); ++i) x[i * 13] = specials[i];
    std::vector<uint16_t> packed(static_cast<size_t>(rows * dim_pad), 0xFFFF);
    std::vector<float> packed32(static_cast<size_t>(rows * dim_pad), NAN);
    Expect(m3::PackRows(x.data(), rows, dim, dim_pad, true, packed.data()) == -1, "PackRows bf16: all finite", 0, 0);
    Expect(m3::PackRows(x.data(), rows, dim, dim_pad, false, packed32.data()) == -1, "PackRows f32: all finite", 0, 0);
    int mismatches = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < dim_pad; ++k) {
        const uint16_t want = k < dim ? m3::FloatToBf16(x[r * dim + k]) : 0;
        const float want32 = k < dim ? x[r * dim + k] : 0.0f;
        if (packed[r * dim_pad + k] != want || std::memcmp(&packed32[r * dim_pad + k], &want32, 4) != 0) ++mismatches;
      }
    Expect(mismatches == 0, "PackRows matches FloatToBf16 / the floats, padding zero", mismatches, 0);
    for (const float bad : {NAN, INFINITY, -INFINITY}) {
      std::vector<float> y = x;
      y[21 * dim + 69] = bad;
      Expect(m3::FirstNonFiniteRow(y.data(), rows, dim) == 21, "FirstNonFiniteRow finds row 21", 0, 0);
      Expect(m3::PackRows(y.data(), rows, dim, dim_pad, true, packed.data()) == 21, "PackRows stops at row 21", 0, 0);
    }
  }
  std::printf("maxsim: %d shapes x 3 formats, %d failures\n", cases, failures);
  return failures ? 1 : 0;
}
