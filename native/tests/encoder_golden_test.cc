// Runs the encoder without Node: encodes the golden cases of test/fixtures/golden.json (token ids
// included there) and compares dense, sparse and ColBERT outputs with the PyTorch reference;
// optionally measures throughput on synthetic token ids.
//
//   encoder_golden_test MODEL_DIR GOLDEN_JSON [--device cpu|cuda] [--tolerance 1e-5]
//                       [--precision bf16 --reference snapshot|baked]   (with fixtures/bf16-golden.json)
//   encoder_golden_test MODEL_DIR --bench [--device cpu|cuda] [--threads N] [--batch 32] [--attainable TOKENS_PER_S]
//                       [--length 256] [--texts 512] [--vocab N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/encoder.h"
#include "weights/mini_json.h"

namespace {

std::string Flag(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == name) return argv[i + 1];
  return fallback;
}

bool HasFlag(int argc, char** argv, const std::string& name) {
  for (int i = 1; i < argc; ++i)
    if (argv[i] == name) return true;
  return false;
}

/// Longest first, batches of at most `batch` texts (the TypeScript planner without a token budget).
void PlanBatches(m3::EncodeRequest* r, uint32_t batch) {
  const size_t n = r->offsets.size() - 1;
  r->order.resize(n);
  std::iota(r->order.begin(), r->order.end(), 0u);
  std::stable_sort(r->order.begin(), r->order.end(), [&](uint32_t a, uint32_t b) {
    return r->offsets[a + 1] - r->offsets[a] > r->offsets[b + 1] - r->offsets[b];
  });
  r->batch_ends.clear();
  for (size_t end = std::min<size_t>(batch, n); ; end = std::min<size_t>(end + batch, n)) {
    r->batch_ends.push_back(static_cast<uint32_t>(end));
    if (end == n) break;
  }
}

m3::LoadSettings Settings(int argc, char** argv, int64_t vocab) {
  m3::LoadSettings s;
  s.session.provider.provider = &m3::FindProvider(Flag(argc, argv, "--device", "cpu"));
  s.session.intra_op_threads = std::atoi(Flag(argc, argv, "--threads", "0").c_str());
  if (!m3::ParsePrecision(Flag(argc, argv, "--precision", "fp32"), &s.session.precision)) {
    std::fprintf(stderr, "--precision must be fp32 or bf16\n");
    std::exit(2);
  }
  s.vocab_size = vocab;
  return s;
}

int Golden(int argc, char** argv) {
  const std::string dir = argv[1], golden_path = argv[2];
  const double tol = std::atof(Flag(argc, argv, "--tolerance", "1e-5").c_str());
  std::ifstream in(golden_path);
  std::stringstream buf;
  buf << in.rdbuf();
  const m3::json::Value golden = m3::json::Parse(buf.str(), golden_path);
  const auto& cases = golden.Find("cases")->array;
  const int64_t dim = golden.Find("dim")->integer;
  const int64_t vocab = golden.Find("model")->Find("vocab_size")->integer;

  auto encoder = m3::Encoder::Load(dir, Settings(argc, argv, vocab));
  if (Flag(argc, argv, "--precision", "fp32") == "bf16" && encoder->session().bf16_layers() == 0) {
    std::printf("golden: skipped, no bf16 layers here: %s\n", encoder->session().precision_note().c_str());
    return 0;
  }
  // bf16-golden.json keeps each case's outputs under the layout they are for.
  const std::string section = Flag(argc, argv, "--reference", "");
  m3::EncodeRequest request;
  request.outputs.add(m3::OutputKind::kColbert);
  request.offsets.push_back(0);
  for (const auto& c : cases) {
    for (const auto& id : c.Find("ids")->array) request.ids.push_back(static_cast<int32_t>(id.integer));
    request.offsets.push_back(static_cast<uint32_t>(request.ids.size()));
  }
  PlanBatches(&request, 4);
  const m3::EncodeResult out = encoder->Encode(request, nullptr);

  int failures = 0;
  double worst = 0;
  auto check = [&](double got, double want, const std::string& what) {
    const double diff = std::fabs(got - want);
    worst = std::max(worst, diff);
    if (!(diff <= tol) && failures++ < 10) std::printf("FAIL %s: %.8g vs %.8g\n", what.c_str(), got, want);
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string name = cases[i].Find("name")->string;
    const m3::json::Value& ref = section.empty() ? cases[i] : *cases[i].Find(section);
    const auto& dense = ref.Find("dense")->array;
    for (int64_t k = 0; k < dim; ++k) check(out.dense[i * dim + k], dense[k].number, name + " dense");
    const auto& sparse = ref.Find("sparse")->object;
    const uint32_t s0 = out.sparse_offsets[i], s1 = out.sparse_offsets[i + 1];
    if (s1 - s0 != sparse.size() && failures++ < 10)
      std::printf("FAIL %s sparse: %u ids vs %zu\n", name.c_str(), s1 - s0, sparse.size());
    for (const auto& kv : sparse) {
      const uint32_t id = static_cast<uint32_t>(std::stoul(kv.first));
      const uint32_t* at = std::find(out.sparse_ids.data() + s0, out.sparse_ids.data() + s1, id);
      if (at == out.sparse_ids.data() + s1) {
        if (failures++ < 10) std::printf("FAIL %s sparse: id %u missing\n", name.c_str(), id);
        continue;
      }
      check(out.sparse_weights[at - out.sparse_ids.data()], kv.second.number, name + " sparse");
    }
    const auto& colbert = ref.Find("colbert")->array;
    const uint32_t c0 = out.colbert_offsets[i], rows = out.colbert_offsets[i + 1] - c0;
    if (rows != colbert.size() && failures++ < 10)
      std::printf("FAIL %s colbert rows: %u vs %zu\n", name.c_str(), rows, colbert.size());
    for (size_t r = 0; r < std::min<size_t>(rows, colbert.size()); ++r)
      for (int64_t k = 0; k < dim; ++k)
        check(out.colbert[(c0 + r) * dim + k], colbert[r].array[k].number, name + " colbert");
  }
  // A CUDA session of the BAAI layout should run its heads on the GPU; say where they ran.
  const bool cuda = Flag(argc, argv, "--device", "cpu") == "cuda";
  if (cuda && encoder->kind() == m3::GraphKind::kHiddenState && std::string(encoder->heads_device()) != "cuda") {
    std::printf("FAIL the heads run on the CPU: %s\n", encoder->gpu_heads_why().c_str());
    ++failures;
  }
  std::printf("golden: %zu cases on %s (heads on %s, %d bf16 layers), worst |diff| %.3g (tolerance %.1g): %s\n", cases.size(),
              Flag(argc, argv, "--device", "cpu").c_str(), encoder->heads_device(), encoder->session().bf16_layers(), worst, tol,
              failures ? "FAIL" : "ok");
  return failures ? 1 : 0;
}

int Bench(int argc, char** argv) {
  const std::string dir = argv[1];
  const int64_t vocab = std::atoll(Flag(argc, argv, "--vocab", "4000").c_str());
  const int texts = std::atoi(Flag(argc, argv, "--texts", "512").c_str());
  const int length = std::atoi(Flag(argc, argv, "--length", "256").c_str());
  const uint32_t batch = static_cast<uint32_t>(std::atoi(Flag(argc, argv, "--batch", "32").c_str()));
  auto encoder = m3::Encoder::Load(dir, Settings(argc, argv, vocab));
  if (Flag(argc, argv, "--precision", "fp32") == "bf16" && encoder->session().bf16_layers() == 0) {
    std::printf("golden: skipped, no bf16 layers here: %s\n", encoder->session().precision_note().c_str());
    return 0;
  }
  // bf16-golden.json keeps each case's outputs under the layout they are for.
  const std::string section = Flag(argc, argv, "--reference", "");
  m3::EncodeRequest request;
  request.outputs.add(m3::OutputKind::kColbert);
  request.offsets.push_back(0);
  uint32_t seed = 7;
  for (int t = 0; t < texts; ++t) {
    request.ids.push_back(0);
    for (int k = 0; k < length - 2; ++k) {
      seed = seed * 1103515245u + 12345u;
      request.ids.push_back(static_cast<int32_t>(4 + (seed >> 8) % static_cast<uint32_t>(vocab - 5)));
    }
    request.ids.push_back(2);
    request.offsets.push_back(static_cast<uint32_t>(request.ids.size()));
  }
  PlanBatches(&request, batch);
  encoder->Encode(request, nullptr);  // warm-up
  std::vector<double> rates;
  double heads_share = 0;
  for (int run = 0; run < 5; ++run) {
    const auto start = std::chrono::steady_clock::now();
    const m3::EncodeResult out = encoder->Encode(request, nullptr);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    rates.push_back(static_cast<double>(request.ids.size()) / (ms / 1000.0));
    heads_share = 100.0 * out.heads_ms / ms;
  }
  std::sort(rates.begin(), rates.end());
  const double rate = rates[rates.size() / 2];
  std::printf("bench: %s, %d texts x %d tokens, batch %u: %.0f tokens/s median, %.0f best, heads %.1f%% of time",
              Flag(argc, argv, "--device", "cpu").c_str(), texts, length, batch, rate, rates.back(), heads_share);
  // The useful FLOP rate (bench/common.ts encoderFlops: projections, feed-forward and attention,
  // 2 per multiply-add), where config.json gives the dimensions.
  std::ifstream config_in(dir + "/config.json");
  if (config_in) {
    std::stringstream buf;
    buf << config_in.rdbuf();
    const m3::json::Value config = m3::json::Parse(buf.str(), dir + "/config.json");
    const auto* layers = config.Find("num_hidden_layers");
    const auto* h = config.Find("hidden_size");
    const auto* i = config.Find("intermediate_size");
    if (layers && h && i) {
      const double hd = static_cast<double>(h->integer), id = static_cast<double>(i->integer);
      const double per_token = 2.0 * static_cast<double>(layers->integer) * (4 * hd * hd + 2 * hd * id + 2.0 * length * hd);
      std::printf(", %.3g TFLOP/s", per_token * rate / 1e12);
    }
  }
  // --attainable N: the rate to compare with (tokens/s; scripts/gpu_peers.py's figure for the model's shape).
  const double attainable = std::atof(Flag(argc, argv, "--attainable", "0").c_str());
  if (attainable > 0) std::printf(", %.1f%% of the attainable %.0f tokens/s", 100.0 * rate / attainable, attainable);
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR GOLDEN_JSON [--device cpu|cuda] | MODEL_DIR --bench [...]\n", argv[0]);
    return 2;
  }
  try {
    return HasFlag(argc, argv, "--bench") ? Bench(argc, argv) : Golden(argc, argv);
  } catch (const m3::CoreError& e) {
    std::printf("%s: %s\n", e.code().c_str(), e.what());
    return e.code() == "ERR_DEVICE" ? 3 : 1;
  }
}
