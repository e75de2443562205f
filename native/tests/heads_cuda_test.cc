// The GPU heads (kernels/cuda/heads_cuda.h) against the CPU heads (core/m3_heads.h,
// core/pooling.h) on random hidden states and weights: BGE-M3's shape and odd ones, texts of
// every length from 1 token to the padded length, in fp32 and as fp16 / bf16 hidden states
// (which the GPU widens; the CPU reference reads the same values widened on the host). Without a CUDA device (or a build without CUDA)
// it checks the error and exits 0 saying so, unless REQUIRE_CUDA=1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/m3_heads.h"
#include "core/pooling.h"
#include "base/half.h"
#include "weights/tensor_file.h"
#include "kernels/cuda/heads_cuda.h"
#include "kernels/cuda/maxsim_cuda.h"

namespace {

int failures = 0;

double Compare(const char* what, const std::vector<float>& expected, const std::vector<float>& actual, double tol) {
  double worst = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double err = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    worst = std::max(worst, std::isnan(actual[i]) ? INFINITY : err);
    if (!(err <= tol) && failures++ < 20) std::printf("FAIL %s[%zu]: gpu %.7f cpu %.7f\n", what, i, actual[i], expected[i]);
  }
  return worst;
}

void RunCase(std::mt19937& rng, int64_t hidden, int64_t dim, int64_t batch, int64_t len,
             m3::cuda::HiddenFormat format = m3::cuda::HiddenFormat::kF32) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> length(1, len);
  m3::M3Heads heads;
  heads.hidden = hidden;
  heads.colbert_dim = dim;
  heads.colbert_weight.resize(static_cast<size_t>(dim * hidden));
  heads.colbert_bias.resize(static_cast<size_t>(dim));
  heads.sparse_weight.resize(static_cast<size_t>(hidden));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hidden));
  for (auto& x : heads.colbert_weight) x = normal(rng) * scale;
  for (auto& x : heads.colbert_bias) x = normal(rng) * 0.1f;
  for (auto& x : heads.sparse_weight) x = normal(rng) * scale;
  heads.sparse_bias = 0.05f;
  heads.colbert = m3::PackLinear(heads.colbert_weight.data(), heads.colbert_bias.data(), dim, hidden);

  std::vector<float> h(static_cast<size_t>(batch * len * hidden));
  for (auto& x : h) x = normal(rng);
  // 16-bit formats: random values of magnitude 2^-4 .. 2^2 drawn as bit patterns, and their
  // exact widening for the CPU.
  std::vector<uint16_t> h16(format == m3::cuda::HiddenFormat::kF32 ? 0 : h.size());
  std::uniform_int_distribution<int> exponent(-4, 1), bit(0, 1);
  std::uniform_int_distribution<uint32_t> mantissa(0, 0xFFFF);
  for (size_t i = 0; i < h16.size(); ++i) {
    const uint32_t sign = static_cast<uint32_t>(bit(rng)) << 15, e = static_cast<uint32_t>(exponent(rng));
    if (format == m3::cuda::HiddenFormat::kF16)
      h16[i] = static_cast<uint16_t>(sign | ((e + 15) << 10) | (mantissa(rng) & 0x3FF));
    else
      h16[i] = static_cast<uint16_t>(sign | ((e + 127) << 7) | (mantissa(rng) & 0x7F));
  }
  if (format == m3::cuda::HiddenFormat::kF16) m3::WidenHalfs(h16.data(), h16.size(), h.data());
  if (format == m3::cuda::HiddenFormat::kBF16) m3::WidenBf16s(h16.data(), h16.size(), h.data());
  const void* device_input = h16.empty() ? static_cast<const void*>(h.data()) : static_cast<const void*>(h16.data());
  std::vector<int64_t> lengths(static_cast<size_t>(batch));
  for (auto& n : lengths) n = length(rng);
  lengths[0] = 1;  // a text of CLS alone: no ColBERT rows
  if (batch > 1) lengths[1] = len;

  // CPU reference.
  std::vector<float> dense_cpu(static_cast<size_t>(batch * hidden)), sparse_cpu(static_cast<size_t>(batch * len), 0.0f), colbert_cpu;
  for (int64_t b = 0; b < batch; ++b) {
    const float* text = h.data() + b * len * hidden;
    std::copy(text, text + hidden, dense_cpu.begin() + b * hidden);
    m3::NormalizeL2(dense_cpu.data() + b * hidden, hidden);
    m3::SparseTokenWeights(heads, text, lengths[b], hidden, sparse_cpu.data() + b * len);
    std::vector<float> rows(static_cast<size_t>(std::max<int64_t>(lengths[b] - 1, 0) * dim));
    m3::ColbertRows(heads, text + hidden, lengths[b] - 1, hidden, rows.data());
    colbert_cpu.insert(colbert_cpu.end(), rows.begin(), rows.end());
  }

  auto gpu = m3::cuda::DeviceHeads::Upload(heads.colbert_weight.data(), heads.colbert_bias.data(), dim, hidden, heads.sparse_weight.data(),
                                           heads.sparse_bias, 0);
  std::vector<float> dense(dense_cpu.size(), NAN), sparse(sparse_cpu.size(), NAN), colbert(colbert_cpu.size(), NAN);
  gpu->RunHost(device_input, format, batch, len, lengths.data(), dense.data(), sparse.data(), colbert.data());
  // Accumulation order differs (fp32 sums of `hidden` products of unit-scale values).
  const double wd = Compare("dense", dense_cpu, dense, 1e-6);
  const double ws = Compare("sparse", sparse_cpu, sparse, 2e-5 * std::sqrt(static_cast<double>(hidden)));
  const double wc = Compare("colbert", colbert_cpu, colbert, 2e-6 * std::sqrt(static_cast<double>(hidden)));
  const char* format_name = format == m3::cuda::HiddenFormat::kF32 ? "f32" : format == m3::cuda::HiddenFormat::kF16 ? "f16" : "bf16";
  std::printf("ok %-4s hidden %4lld dim %4lld batch %2lld len %3lld  worst error dense %.1e sparse %.1e colbert %.1e\n", format_name,
              static_cast<long long>(hidden), static_cast<long long>(dim), static_cast<long long>(batch), static_cast<long long>(len), wd, ws,
              wc);
  // One output at a time gives the same values.
  std::vector<float> dense_only(dense_cpu.size(), NAN), sparse_only(sparse_cpu.size(), NAN), colbert_only(colbert_cpu.size(), NAN);
  gpu->RunHost(device_input, format, batch, len, lengths.data(), dense_only.data(), nullptr, nullptr);
  gpu->RunHost(device_input, format, batch, len, lengths.data(), nullptr, sparse_only.data(), nullptr);
  gpu->RunHost(device_input, format, batch, len, lengths.data(), nullptr, nullptr, colbert_only.data());
  Compare("dense alone", dense, dense_only, 0.0);
  Compare("sparse alone", sparse, sparse_only, 0.0);
  Compare("colbert alone", colbert, colbert_only, 0.0);
}

}  // namespace

int main() {
  std::string why;
  if (m3::cuda::DeviceCount(&why) == 0) {
    if (const char* req = std::getenv("REQUIRE_CUDA"); req && std::string(req) == "1") {
      std::printf("FAIL REQUIRE_CUDA=1 but no usable CUDA device (%s)\n", why.c_str());
      return 1;
    }
    try {
      const float w = 0.0f;
      m3::cuda::DeviceHeads::Upload(&w, &w, 1, 1, &w, 0.0f, 0);
      std::printf("FAIL: Upload succeeded without a device\n");
      return 1;
    } catch (const m3::CoreError& e) {
      if (e.code() != "ERR_DEVICE") {
        std::printf("FAIL: expected ERR_DEVICE, got %s\n", e.code().c_str());
        return 1;
      }
    }
    std::printf("SKIP no CUDA device (%s), ERR_DEVICE checked\n", why.c_str());
    return 0;
  }
  std::printf("device: %s\n", m3::cuda::DeviceName(0).c_str());
  std::mt19937 rng(1127);
  RunCase(rng, 1024, 1024, 8, 96);  // BGE-M3's heads
  RunCase(rng, 64, 48, 5, 37);
  RunCase(rng, 100, 13, 3, 70);
  RunCase(rng, 8, 3, 1, 1);
  RunCase(rng, 1024, 1024, 4, 50, m3::cuda::HiddenFormat::kF16);  // fp16 / bf16 exports' hidden states
  RunCase(rng, 100, 13, 3, 70, m3::cuda::HiddenFormat::kBF16);
  // Errors: a length outside 1..len.
  try {
    const std::vector<float> w(16, 0.0f), hs(32, 0.0f);
    auto gpu = m3::cuda::DeviceHeads::Upload(w.data(), w.data(), 2, 8, w.data(), 0.0f, 0);
    const int64_t bad = 5;
    std::vector<float> out(16);
    gpu->RunHost(hs.data(), m3::cuda::HiddenFormat::kF32, 1, 4, &bad, nullptr, out.data(), nullptr);
    std::printf("FAIL: a length past the padded length was accepted\n");
    ++failures;
  } catch (const m3::CoreError& e) {
    if (e.code() != "ERR_INPUT") ++failures;
  }
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("the GPU heads match the CPU heads\n");
  return 0;
}
