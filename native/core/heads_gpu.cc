#include "core/heads_gpu.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "core/ort_values.h"
#include "core/pooling.h"
#include "kernels/cuda/heads_cuda.h"

namespace m3 {
namespace {

/// The GPU heads' reading of a device-resident hidden-state output.
cuda::HiddenFormat HiddenFormatOf(const Ort::Value& v) {
  switch (v.GetTensorTypeAndShapeInfo().GetElementType()) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16:
      return cuda::HiddenFormat::kF16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
      return cuda::HiddenFormat::kBF16;
    default:
      return cuda::HiddenFormat::kF32;
  }
}

}  // namespace

GpuHeads::GpuHeads(EncoderSession& session, const CpuHeads& cpu, std::unique_ptr<cuda::DeviceHeads> device)
    : session_(session), cpu_(cpu), device_(std::move(device)) {}

GpuHeads::~GpuHeads() = default;

std::unique_ptr<GpuHeads> GpuHeads::Create(EncoderSession& session, const CpuHeads& cpu, std::string* why) {
  const M3Heads& h = cpu.weights();
  std::unique_ptr<cuda::DeviceHeads> device;
  try {
    device = cuda::DeviceHeads::Upload(h.colbert_weight.data(), h.colbert_bias.data(), h.colbert_dim, h.hidden,
                                       h.sparse_weight.data(), h.sparse_bias, session.device_id());
  } catch (const CoreError& e) {
    if (e.code() != "ERR_DEVICE") throw;
    *why = e.what();
    return nullptr;
  }
  std::unique_ptr<GpuHeads> heads(new GpuHeads(session, cpu, std::move(device)));
  // The first use of device outputs and the GPU heads, checked here rather than at the first
  // encode: whatever fails falls back to the CPU heads, with the reason.
  try {
    heads->Check();
  } catch (const std::exception& e) {
    *why = std::string("the GPU heads failed their check at load, so they run on the CPU: ") + e.what();
    return nullptr;
  }
  return heads;
}

void GpuHeads::Check() const {
  const int64_t ids[4] = {0, 3, 3, 2};  // <s> <unk> <unk> </s>: ids every XLM-R vocabulary has
  const int64_t mask[4] = {1, 1, 1, 1};
  const int64_t len = 4, lengths[1] = {len};
  const int64_t hidden = cpu_.hidden(), dim = cpu_.dim();
  const std::vector<const char*> names = {session_.hidden_output().c_str()};
  auto check_shape = [&](const Ort::Value& v) {
    if (ShapeOf(v) != std::vector<int64_t>{1, len, hidden} || !FloatLike(v))
      throw CoreError("ERR_MODEL_LAYOUT", "Output '" + session_.hidden_output() + "' has shape " + ShapeString(ShapeOf(v)) +
                                              " for a [1, 4] batch, which does not fit the layout seen at load.");
  };
  std::vector<float> dense(static_cast<size_t>(hidden)), sparse(static_cast<size_t>(len)), colbert(static_cast<size_t>((len - 1) * dim));
  {
    Ort::RunOptions options;
    std::vector<Ort::Value> out = session_.Run(ids, mask, 1, len, names, options, true);
    check_shape(out[0]);
    device_->Run(out[0].GetTensorRawData(), HiddenFormatOf(out[0]), 1, len, lengths, dense.data(), sparse.data(), colbert.data());
  }
  Ort::RunOptions options;
  std::vector<Ort::Value> host = session_.Run(ids, mask, 1, len, names, options, false);
  std::vector<float> widened;
  const float* h = FloatData(host[0], &widened);
  std::vector<float> dense_cpu(h, h + hidden), sparse_cpu(static_cast<size_t>(len)), colbert_cpu(colbert.size());
  NormalizeL2(dense_cpu.data(), hidden);
  SparseTokenWeights(cpu_.weights(), h, len, hidden, sparse_cpu.data());
  ColbertRows(cpu_.weights(), h + hidden, len - 1, hidden, colbert_cpu.data());
  auto compare = [](const char* what, const std::vector<float>& a, const std::vector<float>& b, double tol) {
    for (size_t i = 0; i < a.size(); ++i)
      if (!(std::fabs(static_cast<double>(a[i]) - b[i]) <= tol * std::max(1.0, std::fabs(static_cast<double>(b[i])))))
        throw CoreError("ERR_DEVICE", std::string(what) + " value " + std::to_string(i) + " is " + std::to_string(a[i]) + " on the GPU, " +
                                          std::to_string(b[i]) + " on the CPU");
  };
  compare("dense", dense, dense_cpu, 1e-4);
  compare("sparse", sparse, sparse_cpu, 1e-3);
  compare("ColBERT", colbert, colbert_cpu, 1e-4);
}

void GpuHeads::Apply(const HeadsBatch& hb) const {
  const EncodeRequest& request = hb.out.request();
  const OutputSet want = request.outputs;
  const int64_t batch = hb.batch.batch, len = hb.batch.len, hidden = cpu_.hidden(), dim = cpu_.dim();
  std::vector<Ort::Value> out = hb.run(true);
  const auto start = std::chrono::steady_clock::now();
  std::vector<int64_t> lengths(static_cast<size_t>(batch)), colbert_row(static_cast<size_t>(batch) + 1, 0);
  for (int64_t b = 0; b < batch; ++b) {
    lengths[b] = request.length(hb.batch.text(request, b));
    colbert_row[b + 1] = colbert_row[b] + lengths[b] - 1;
  }
  std::vector<float> dense(want.dense() ? static_cast<size_t>(batch * hidden) : 0);
  std::vector<float> sparse(want.sparse() ? static_cast<size_t>(batch * len) : 0);
  std::vector<float> colbert(want.colbert() ? static_cast<size_t>(colbert_row[batch] * dim) : 0);
  try {
    device_->Run(out[0].GetTensorRawData(), HiddenFormatOf(out[0]), batch, len, lengths.data(), want.dense() ? dense.data() : nullptr,
                 want.sparse() ? sparse.data() : nullptr, want.colbert() ? colbert.data() : nullptr);
  } catch (const CoreError& e) {
    if (e.code() != "ERR_DEVICE") throw;
    // The GPU heads failed (say, out of device memory beside ONNX Runtime's arena): this batch
    // again with its outputs on the host, for the CPU heads.
    out.clear();
    cpu_.ApplyTo(hb.run(false), hb);
    return;
  }
  LexicalScratch scratch;
  for (int64_t b = 0; b < batch; ++b) {
    const uint32_t text = hb.batch.text(request, b);
    if (want.dense()) std::memcpy(hb.out.dense_row(text), dense.data() + b * hidden, dim * sizeof(float));
    if (want.sparse()) hb.out.SetSparse(text, sparse.data() + b * len, &scratch);
    if (want.colbert())
      std::memcpy(hb.out.colbert_rows(text), colbert.data() + colbert_row[b] * dim, (lengths[b] - 1) * dim * sizeof(float));
  }
  hb.out.stats().heads_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace m3
