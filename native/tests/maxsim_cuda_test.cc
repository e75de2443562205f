// The CUDA MaxSim kernels against the CPU serial oracle (MaxSimBatchOn(kSerial)) on random
// shapes: odd dims, empty and 1..40-row queries, empty documents, documents longer than one
// shared-memory slice, more documents than the grid has blocks, query batches over the
// per-launch row limit; fp32 and bf16 storage. Without a CUDA device (or a build without CUDA)
// it checks the error and exits 0 saying so, unless REQUIRE_CUDA=1.
//
//   maxsim_cuda_test            correctness
//   maxsim_cuda_test --small    the first cases only (for compute-sanitizer)
//   maxsim_cuda_test --bench [NQ]  (NQ: that batch size and the default kernel only, for profilers)
//                               the README's H100 targets: 16 queries x 32 rows and 1 query x 32
//                               rows against 1M 1024-d bf16 rows (~ 8,000 documents of 128 rows)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "kernels/cuda/maxsim_cuda.h"
#include "kernels/maxsim.h"
#include "kernels/quantize.h"

namespace {

int failures = 0;
bool wgmma_noted = false;

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

void RunCase(std::mt19937& rng, int64_t dim, const std::vector<uint32_t>& query_rows, const std::vector<uint32_t>& doc_rows,
             m3::VectorFormat format) {
  std::vector<uint32_t> doffs{0}, qoffs{0};
  for (uint32_t n : doc_rows) doffs.push_back(doffs.back() + n);
  for (uint32_t n : query_rows) qoffs.push_back(qoffs.back() + n);
  const auto docs_f32 = RandomUnitRows(rng, doffs.back(), dim);
  const auto queries = RandomUnitRows(rng, qoffs.back(), dim);
  std::vector<uint16_t> docs_bf16(docs_f32.size());
  m3::QuantizeBf16(docs_f32.data(), static_cast<int64_t>(docs_f32.size()), docs_bf16.data());
  m3::MultiVectorSet set;
  set.format = format;
  set.dim = dim;
  set.count = static_cast<int64_t>(doc_rows.size());
  set.offsets = doffs.data();
  set.data = format == m3::VectorFormat::kBF16 ? static_cast<const void*>(docs_bf16.data()) : docs_f32.data();
  const int64_t nq = static_cast<int64_t>(query_rows.size());
  std::vector<float> expected(static_cast<size_t>(nq * set.count));
  m3::MaxSimBatchOn(m3::IsaTier::kSerial, queries.data(), qoffs.data(), nq, set, expected.data(), 1);
  auto gpu = m3::cuda::DeviceMultiVectors::Upload(set, format, 0);
  if (format == m3::VectorFormat::kBF16 && !gpu->uses_tma() && !wgmma_noted) {
    std::printf("note: %s; those configurations fall back to the default kernel\n",
                gpu->uses_wgmma() ? "no tensor map over the documents (TMA)" : "no wgmma on this device or build");
    wgmma_noted = true;
  }
  // bf16: the staged kernel and every configuration of the tiled one (fp32 has one kernel).
  const bool bf16 = format == m3::VectorFormat::kBF16;
  std::vector<std::pair<std::string, int>> variants;  // name, tile configuration (-1: the staged kernel)
  if (bf16) {
    const auto names = m3::cuda::TiledConfigNames();
    for (size_t i = 0; i < names.size(); ++i) variants.emplace_back("tiled " + names[i], static_cast<int>(i));
    variants.emplace_back("staged", -1);
  } else {
    variants.emplace_back("f32", -1);
  }
  for (const auto& [name_str, config] : variants) {
    const char* name = name_str.c_str();
    std::vector<float> actual(expected.size(), NAN);
    gpu->MaxSimBatch(queries.data(), qoffs.data(), nq, actual.data(), config >= 0 ? m3::cuda::Kernel::kTiled : m3::cuda::Kernel::kStaged,
                     config);
    // fp32: accumulation order only; bf16: both sides round the same inputs, fp32 accumulation.
    const double tol = bf16 ? 2e-4 : 2e-5;
    double worst = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      const double err = std::fabs(static_cast<double>(actual[i]) - expected[i]);
      worst = std::max(worst, std::isnan(actual[i]) ? INFINITY : err);
      if (!(err <= tol) && failures++ < 20)
        std::printf("FAIL %s dim %lld: query %zu doc %zu: gpu %.7f cpu %.7f\n", name, static_cast<long long>(dim), i / set.count,
                    i % set.count, actual[i], expected[i]);
    }
    std::printf("ok %-26s dim %4lld queries %3lld rows %5u docs %5lld rows %6u  worst error %.2e\n", name, static_cast<long long>(dim),
                static_cast<long long>(nq), qoffs.back(), static_cast<long long>(set.count), doffs.back(), worst);
  }
}

/// --bench [NQ [CONFIG]]: every batch size (or NQ queries only: the default kernel, or tile
/// configuration CONFIG alone, for profilers).
int Bench(int only_nq, int only_config) {
  std::mt19937 rng(7);
  const int64_t dim = 1024, doc_len = 128, docs = 8192;  // 1,048,576 rows
  std::printf("device: %s\n", m3::cuda::DeviceName(0).c_str());
  std::vector<uint32_t> doffs(docs + 1);
  for (int64_t i = 0; i <= docs; ++i) doffs[i] = static_cast<uint32_t>(i * doc_len);
  // Rows from a small random pool (generating 1M unit rows on the CPU would dominate the run).
  const auto pool = RandomUnitRows(rng, 4096, dim);
  std::vector<uint16_t> data(static_cast<size_t>(docs * doc_len * dim));
  std::vector<uint16_t> pool16(pool.size());
  m3::QuantizeBf16(pool.data(), static_cast<int64_t>(pool.size()), pool16.data());
  std::uniform_int_distribution<int> pick(0, 4095);
  for (int64_t r = 0; r < docs * doc_len; ++r) std::memcpy(data.data() + r * dim, pool16.data() + pick(rng) * dim, dim * 2);
  m3::MultiVectorSet set;
  set.format = m3::VectorFormat::kBF16;
  set.dim = dim;
  set.count = docs;
  set.offsets = doffs.data();
  set.data = data.data();
  auto gpu = m3::cuda::DeviceMultiVectors::Upload(set, m3::VectorFormat::kBF16, 0);
  const auto config_names = m3::cuda::TiledConfigNames();
  for (size_t i = 0; i < config_names.size(); ++i) std::printf("configuration %zu: %s\n", i, config_names[i].c_str());
  std::printf("device: wgmma kernel %s, TMA kernel %s\n", gpu->uses_wgmma() ? "available" : "not available",
              gpu->uses_tma() ? "available" : "not available");
  const double rows = static_cast<double>(docs * doc_len);
  for (const int nq : {1, 2, 16, 64}) {
    if (only_nq > 0 && nq != only_nq) continue;
    std::vector<uint32_t> qoffs(nq + 1);
    for (int q = 0; q <= nq; ++q) qoffs[q] = q * 32;
    const auto queries = RandomUnitRows(rng, nq * 32, dim);
    std::vector<float> scores(static_cast<size_t>(nq * docs));
    // The default choice first, then the staged kernel and every tiled configuration (NQ given:
    // the default only, or CONFIG only).
    const auto names = m3::cuda::TiledConfigNames();
    if (only_config >= static_cast<int>(names.size())) {
      std::printf("FAIL no tile configuration %d (%zu configurations)\n", only_config, names.size());
      return 1;
    }
    std::vector<int> order;  // -2: the default choice; -1: the staged kernel; else a tile configuration
    if (only_config >= 0) {
      order.push_back(only_config);
    } else {
      order.push_back(-2);
      if (only_nq <= 0) {
        order.push_back(-1);
        for (size_t i = 0; i < names.size(); ++i) order.push_back(static_cast<int>(i));
      }
    }
    for (const int config : order) {
      const auto kernel = config == -1 ? m3::cuda::Kernel::kStaged : m3::cuda::Kernel::kTiled;
      const std::string name = config == -2 ? "default" : config == -1 ? "staged" : "tiled " + names[config];
      std::vector<double> seconds, wall;
      for (int run = 0; run < 8; ++run) {
        const auto t0 = std::chrono::steady_clock::now();
        gpu->MaxSimBatch(queries.data(), qoffs.data(), nq, scores.data(), kernel, config);
        const double w = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (run > 1) {
          seconds.push_back(gpu->last_kernel_seconds());
          wall.push_back(w);
        }
      }
      std::sort(seconds.begin(), seconds.end());
      std::sort(wall.begin(), wall.end());
      const double s = seconds[seconds.size() / 2];
      const double flops = 2.0 * nq * 32 * rows * dim;
      std::printf("bench bf16 %-26s %2d queries x 32 rows vs %.0f rows of %lld: kernels %.3f ms median (best %.3f), %.1f TFLOP/s, "
                  "%.0f GB/s of documents; call %.3f ms median\n",
                  name.c_str(), nq, rows, static_cast<long long>(dim), s * 1e3, seconds.front() * 1e3, flops / s / 1e12,
                  rows * dim * 2 / s / 1e9, wall[wall.size() / 2] * 1e3);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (m3::cuda::DeviceCount(&why) == 0) {
    // On a machine that should run the kernels (the device check sets REQUIRE_CUDA=1 where
    // nvidia-smi sees a GPU), a skip would hide a build without them: fail instead.
    if (std::getenv("REQUIRE_CUDA") && std::strcmp(std::getenv("REQUIRE_CUDA"), "1") == 0) {
      std::printf("FAIL REQUIRE_CUDA=1 but no usable CUDA device (%s), built %s\n", why.c_str(),
                  m3::cuda::Built() ? "with CUDA" : "without CUDA");
      return 1;
    }
    // Without a device the entry points must fail cleanly with ERR_DEVICE.
    std::vector<uint32_t> offs{0, 1};
    std::vector<float> row(4, 0.5f);
    m3::MultiVectorSet set;
    set.dim = 4;
    set.count = 1;
    set.offsets = offs.data();
    set.data = row.data();
    try {
      m3::cuda::DeviceMultiVectors::Upload(set, m3::VectorFormat::kF32, 0);
      std::printf("FAIL: Upload succeeded without a device\n");
      return 1;
    } catch (const m3::CoreError& e) {
      if (e.code() != "ERR_DEVICE") {
        std::printf("FAIL: expected ERR_DEVICE, got %s\n", e.code().c_str());
        return 1;
      }
    }
    std::printf("SKIP no CUDA device (%s): built %s, ERR_DEVICE checked\n", why.c_str(), m3::cuda::Built() ? "with CUDA" : "without CUDA");
    return 0;
  }
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return Bench(argc > 2 ? std::atoi(argv[2]) : 0, argc > 3 ? std::atoi(argv[3]) : -1);
  std::printf("device: %s\n", m3::cuda::DeviceName(0).c_str());
  std::mt19937 rng(20241127);
  // --small: the first cases only (for compute-sanitizer, which slows kernels a hundredfold).
  const bool small = argc > 1 && std::strcmp(argv[1], "--small") == 0;
  for (const auto format : {m3::VectorFormat::kF32, m3::VectorFormat::kBF16}) {
    RunCase(rng, 1024, {32, 1, 7}, {128, 0, 3, 300, 1, 64, 65, 17}, format);
    RunCase(rng, 37, {1, 40, 16}, {5, 0, 0, 129, 2}, format);
    RunCase(rng, 8, {3}, {1, 2, 3}, format);
    RunCase(rng, 64, std::vector<uint32_t>(9, 20), {700, 3, 0, 250, 260}, format);  // 180 query rows: two 128-row tiles
    // 40,000 document rows: more tiles than a persistent kernel has blocks, so each block's
    // pipeline runs on across tiles (one k-tile each here).
    RunCase(rng, 16, {3, 30}, std::vector<uint32_t>(400, 100), format);
    if (small) continue;
    // About 100,000 rows of 200 dimensions: several tiles per block, 4 k-tiles each, which a
    // 3-stage ring does not divide.
    std::uniform_int_distribution<int> long_len(0, 500);
    std::vector<uint32_t> long_docs(400);
    for (auto& d : long_docs) d = long_len(rng);
    RunCase(rng, 200, {32, 5}, long_docs, format);
    std::uniform_int_distribution<int> len(0, 200), qlen(1, 40);
    std::vector<uint32_t> docs(300), queries(150);
    for (auto& d : docs) d = len(rng);
    for (auto& q : queries) q = qlen(rng);  // about 3,000 rows in one launch
    RunCase(rng, 128, queries, docs, format);
    std::vector<uint32_t> many(300, 20);  // 6,000 rows: split over two launches
    RunCase(rng, 64, many, {10, 0, 33}, format);
    RunCase(rng, 24, {0, 5, 0}, {4, 0, 9}, format);  // empty queries score 0
    RunCase(rng, 24, {0, 0}, {4, 0, 9}, format);     // a batch of empty queries: no launch, zeros
    // More documents than blocks in the grid (16 per SM): blocks loop over several documents.
    std::uniform_int_distribution<int> tiny(0, 5);
    std::vector<uint32_t> small_docs(6000);
    for (auto& d : small_docs) d = tiny(rng);
    RunCase(rng, 16, {2, 9}, small_docs, format);
    // 3,000 query rows x 25,000 documents: the per-row maxima exceed their budget, so the tiled
    // kernel scores the documents in two chunks.
    std::vector<uint32_t> wide_queries(100, 30), wide_docs(25000);
    for (auto& d : wide_docs) d = tiny(rng) % 4;
    RunCase(rng, 16, wide_queries, wide_docs, format);
  }
  // Errors: int8 documents.
  try {
    std::vector<uint32_t> offs{0, 1};
    std::vector<int8_t> row(4, 1);
    std::vector<float> scale(1, 1.0f);
    m3::MultiVectorSet set;
    set.format = m3::VectorFormat::kI8;
    set.dim = 4;
    set.count = 1;
    set.offsets = offs.data();
    set.data = row.data();
    set.scales = scale.data();
    m3::cuda::DeviceMultiVectors::Upload(set, m3::VectorFormat::kBF16, 0);
    std::printf("FAIL: int8 upload accepted\n");
    ++failures;
  } catch (const m3::CoreError& e) {
    if (e.code() != "ERR_INPUT") ++failures;
  }
  // Non-finite values: documents (fp32 and bf16 input, into both stores) name the document and
  // row; a query names its row.
  auto expect_input_error = [](const char* what, const std::string& needle, auto&& fn) {
    try {
      fn();
      std::printf("FAIL: %s accepted\n", what);
      ++failures;
    } catch (const m3::CoreError& e) {
      if (e.code() != "ERR_INPUT" || std::string(e.what()).find(needle) == std::string::npos) {
        std::printf("FAIL: %s: %s %s\n", what, e.code().c_str(), e.what());
        ++failures;
      }
    }
  };
  {
    std::vector<uint32_t> offs{0, 2, 2, 5};  // document 1 is empty; row 4 is document 2's row 2
    std::vector<float> rows(5 * 6, 0.25f);
    rows[4 * 6 + 5] = INFINITY;
    std::vector<uint16_t> rows16(rows.size());
    m3::QuantizeBf16(rows.data(), static_cast<int64_t>(rows.size()), rows16.data());
    for (const auto in : {m3::VectorFormat::kF32, m3::VectorFormat::kBF16})
      for (const auto store : {m3::VectorFormat::kF32, m3::VectorFormat::kBF16}) {
        m3::MultiVectorSet set;
        set.format = in;
        set.dim = 6;
        set.count = 3;
        set.offsets = offs.data();
        set.data = in == m3::VectorFormat::kF32 ? static_cast<const void*>(rows.data()) : rows16.data();
        expect_input_error("an infinite document value", "document 2 row 2 holds a non-finite value",
                           [&] { m3::cuda::DeviceMultiVectors::Upload(set, store, 0); });
      }
    rows[4 * 6 + 5] = 0.25f;
    m3::MultiVectorSet set;
    set.dim = 6;
    set.count = 3;
    set.offsets = offs.data();
    set.data = rows.data();
    auto gpu = m3::cuda::DeviceMultiVectors::Upload(set, m3::VectorFormat::kBF16, 0);
    std::vector<float> queries(3 * 6, 0.5f), scores(2 * 3);
    queries[2 * 6 + 1] = NAN;
    const uint32_t qoffs[3] = {0, 1, 3};
    expect_input_error("a NaN query value", "query row 2 holds a non-finite value",
                       [&] { gpu->MaxSimBatch(queries.data(), qoffs, 2, scores.data()); });
  }
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("all CUDA MaxSim cases match the serial oracle\n");
  return 0;
}
