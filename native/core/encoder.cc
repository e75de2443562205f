#include "core/encoder.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstring>
#include <thread>

#include <malloc.h>

#include "base/error.h"
#include "base/half.h"
#include "base/parallel_for.h"
#include "core/pooling.h"
#include "weights/tensor_file.h"

namespace m3 {
namespace {

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

std::vector<int64_t> ShapeOf(const Ort::Value& v) { return v.GetTensorTypeAndShapeInfo().GetShape(); }

/// float32, or a 16-bit float that the encoder widens (fp16 / bf16 exports).
bool FloatLike(const Ort::Value& v) {
  const auto type = v.GetTensorTypeAndShapeInfo().GetElementType();
  return type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 ||
         type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
}

std::string ElementTypeName(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return "bool";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING: return "string";
    default: return "ONNX element type " + std::to_string(static_cast<int>(type));
  }
}

void RequireFloat(const Ort::Value& v, const std::string& name) {
  if (!FloatLike(v)) {
    throw CoreError("ERR_MODEL_LAYOUT", "Output '" + name + "' is " + ElementTypeName(v.GetTensorTypeAndShapeInfo().GetElementType()) +
                                            "; bge-m3 reads float32, float16 and bfloat16 outputs. Export the model with "
                                            "one of those output types.");
  }
}

/// An output as floats: float32 in place, a 16-bit float widened into `scratch`.
const float* FloatData(const Ort::Value& v, std::vector<float>* scratch) {
  const auto info = v.GetTensorTypeAndShapeInfo();
  const auto type = info.GetElementType();
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) return v.GetTensorData<float>();
  const size_t n = info.GetElementCount();
  scratch->resize(n);
  const auto* src = static_cast<const uint16_t*>(v.GetTensorRawData());
  if (type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) WidenHalfs(src, n, scratch->data());
  else WidenBf16s(src, n, scratch->data());
  return scratch->data();
}

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

// Index of the first NaN or Inf in v (exponent bits all set), or v.size(); integer tests vectorize.
size_t FirstNonFinite(const float* v, size_t size) {
  constexpr size_t kBlock = 4096;
  for (size_t start = 0; start < size; start += kBlock) {
    const size_t end = std::min(size, start + kBlock);
    uint32_t any = 0;
    for (size_t i = start; i < end; ++i) {
      uint32_t bits;
      std::memcpy(&bits, &v[i], sizeof(bits));
      any |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (any) {
      for (size_t i = start; i < end; ++i)
        if (!std::isfinite(v[i])) return i;
    }
  }
  return size;
}

size_t FirstNonFinite(const std::vector<float>& v) { return FirstNonFinite(v.data(), v.size()); }

void ValidateRequest(const EncodeRequest& r) {
  if (r.offsets.empty() || r.offsets.front() != 0 || r.offsets.back() != r.ids.size())
    throw CoreError("ERR_INPUT", "encode: token offsets must start at 0 and end at the id count.");
  const size_t count = r.offsets.size() - 1;
  for (size_t i = 0; i < count; ++i) {
    if (r.offsets[i + 1] < r.offsets[i] || r.offsets[i + 1] - r.offsets[i] < 2)
      throw CoreError("ERR_INPUT", "encode: text " + std::to_string(i) + " has fewer than 2 tokens (<s> and </s>).");
  }
  if (r.order.size() != count) throw CoreError("ERR_INPUT", "encode: the batch order must list every text once.");
  std::vector<char> seen(count, 0);
  for (uint32_t i : r.order) {
    if (i >= count || seen[i]) throw CoreError("ERR_INPUT", "encode: the batch order must be a permutation.");
    seen[i] = 1;
  }
  uint32_t prev = 0;
  for (uint32_t end : r.batch_ends) {
    if (end <= prev || end > count) throw CoreError("ERR_INPUT", "encode: batch ends must increase up to the text count.");
    prev = end;
  }
  if (count > 0 && prev != count) throw CoreError("ERR_INPUT", "encode: batch ends must cover every text.");
}

}  // namespace

std::unique_ptr<Encoder> Encoder::Load(const std::string& dir, const LoadSettings& settings) {
  std::unique_ptr<Encoder> enc(new Encoder());
  enc->files_ = FindModelFiles(dir, settings.onnx_file);
  enc->session_ = std::make_unique<EncoderSession>(enc->files_.onnx, settings.session);
  if (enc->session_->kind() == GraphKind::kHiddenState) {
    std::string missing;
    if (enc->files_.colbert_head.empty()) missing += "colbert_linear.pt (or .safetensors)";
    if (enc->files_.sparse_head.empty()) missing += std::string(missing.empty() ? "" : " and ") + "sparse_linear.pt (or .safetensors)";
    if (!missing.empty()) {
      throw CoreError("ERR_MODEL_FILES", "'" + enc->files_.onnx + "' outputs last_hidden_state, so the heads must sit in '" +
                                             dir + "', but " + missing + " is missing. The BAAI/bge-m3 snapshot has both at its root; "
                                             "the directory holds: " + DescribeDirectory(dir));
    }
  }
  enc->head_threads_ = settings.session.intra_op_threads > 0
                          ? settings.session.intra_op_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  enc->Probe(settings.vocab_size);
  if (enc->session_->cuda() && enc->heads_) {
    // The heads where the hidden states are. Without usable CUDA kernels here (a build without
    // them, or a driver older than their runtime) they stay on the CPU, which gives the same
    // results from outputs copied to the host.
    try {
      const M3Heads& h = *enc->heads_;
      enc->gpu_heads_ = cuda::DeviceHeads::Upload(h.colbert_weight.data(), h.colbert_bias.data(), h.colbert_dim, h.hidden,
                                                  h.sparse_weight.data(), h.sparse_bias, enc->session_->device_id());
    } catch (const CoreError& e) {
      if (e.code() != "ERR_DEVICE") throw;
      enc->gpu_heads_why_ = e.what();
    }
    // The first use of device outputs and the GPU heads, checked here rather than at the first
    // encode: whatever fails falls back to the CPU heads, with the reason.
    if (enc->gpu_heads_) {
      try {
        enc->CheckGpuHeads();
      } catch (const std::exception& e) {
        enc->gpu_heads_.reset();
        enc->gpu_heads_why_ = std::string("the GPU heads failed their check at load, so they run on the CPU: ") + e.what();
      }
    }
  }
  return enc;
}

void Encoder::CheckGpuHeads() const {
  const int64_t ids[4] = {0, 3, 3, 2};  // <s> <unk> <unk> </s>: ids every XLM-R vocabulary has
  const int64_t mask[4] = {1, 1, 1, 1};
  const int64_t len = 4, lengths[1] = {len};
  const std::vector<const char*> names = {session_->hidden_output().c_str()};
  std::vector<float> dense(static_cast<size_t>(hidden_)), sparse(static_cast<size_t>(len)), colbert(static_cast<size_t>((len - 1) * dim_));
  {
    Ort::RunOptions options;
    std::vector<Ort::Value> out = session_->Run(ids, mask, 1, len, names, options, true);
    CheckBatchShapes(out, names, 1, len);
    gpu_heads_->Run(out[0].GetTensorRawData(), HiddenFormatOf(out[0]), 1, len, lengths, dense.data(), sparse.data(), colbert.data());
  }
  Ort::RunOptions options;
  std::vector<Ort::Value> host = session_->Run(ids, mask, 1, len, names, options, false);
  std::vector<float> widened;
  const float* h = FloatData(host[0], &widened);
  std::vector<float> dense_cpu(h, h + hidden_), sparse_cpu(static_cast<size_t>(len)), colbert_cpu(colbert.size());
  NormalizeL2(dense_cpu.data(), hidden_);
  SparseTokenWeights(*heads_, h, len, hidden_, sparse_cpu.data());
  ColbertRows(*heads_, h + hidden_, len - 1, hidden_, colbert_cpu.data());
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

void Encoder::CheckBatchShapes(const std::vector<Ort::Value>& out, const std::vector<const char*>& names,
                               int64_t batch, int64_t len) const {
  // The probe checked the layout; this guards the copies below against a graph whose shapes
  // depend on the input in unexpected ways.
  for (size_t i = 0; i < out.size(); ++i) {
    const auto s = ShapeOf(out[i]);
    const std::string name = names[i];
    bool ok = false;
    if (name == session_->hidden_output()) ok = s == std::vector<int64_t>{batch, len, hidden_};
    else if (name == session_->dense_output()) ok = s == std::vector<int64_t>{batch, dim_};
    else if (name == session_->sparse_output())
      ok = s == std::vector<int64_t>{batch, len, 1} || s == std::vector<int64_t>{batch, len};
    else if (name == session_->colbert_output()) ok = s == std::vector<int64_t>{batch, len - 1, dim_};
    if (!ok || !FloatLike(out[i])) {
      throw CoreError("ERR_MODEL_LAYOUT", "Output '" + name + "' has shape " + ShapeString(s) + " for a [" +
                                              std::to_string(batch) + ", " + std::to_string(len) +
                                              "] batch, which does not fit the layout seen at load.");
    }
  }
}

std::vector<const char*> Encoder::OutputsFor(bool dense, bool sparse, bool colbert) const {
  std::vector<const char*> names;
  if (session_->kind() == GraphKind::kHiddenState) {
    names.push_back(session_->hidden_output().c_str());
    return names;
  }
  if (dense) names.push_back(session_->dense_output().c_str());
  if (sparse) names.push_back(session_->sparse_output().c_str());
  if (colbert) names.push_back(session_->colbert_output().c_str());
  return names;
}

void Encoder::Probe(int64_t vocab_size) {
  const int64_t top = std::max<int64_t>(vocab_size - 1, 2);
  const int64_t ids[3] = {0, top, 2};
  const int64_t mask[3] = {1, 1, 1};
  has_dense_ = session_->kind() == GraphKind::kHiddenState || !session_->dense_output().empty();
  has_sparse_ = session_->kind() == GraphKind::kHiddenState || !session_->sparse_output().empty();
  has_colbert_ = session_->kind() == GraphKind::kHiddenState || !session_->colbert_output().empty();
  const auto names = OutputsFor(has_dense_, has_sparse_, has_colbert_);
  std::vector<Ort::Value> out;
  try {
    Ort::RunOptions options;
    out = session_->Run(ids, mask, 1, 3, names, options);
  } catch (const Ort::Exception& e) {
    const int64_t small_ids[2] = {0, 2};
    bool small_ok = false;
    try {
      Ort::RunOptions options;
      session_->Run(small_ids, mask, 1, 2, names, options);
      small_ok = true;
    } catch (const Ort::Exception&) {
    }
    if (small_ok) {
      throw CoreError("ERR_MODEL_LAYOUT", "The tokenizer and the model do not match: the tokenizer has " +
                                              std::to_string(vocab_size) + " ids but '" + files_.onnx +
                                              "' rejects id " + std::to_string(top) + " (" + e.what() +
                                              "). Use the tokenizer.json that came with this model.");
    }
    throw CoreError("ERR_MODEL_LAYOUT", "'" + files_.onnx + "' failed on a 3-token probe input: " + e.what());
  }
  for (size_t i = 0; i < out.size(); ++i) RequireFloat(out[i], names[i]);
  auto fail_shape = [&](const std::string& name, const Ort::Value& v, const std::string& want) {
    throw CoreError("ERR_MODEL_LAYOUT", "Output '" + name + "' of '" + files_.onnx + "' has shape " +
                                            ShapeString(ShapeOf(v)) + " for a [1, 3] input; expected " + want + ".");
  };
  if (session_->kind() == GraphKind::kHiddenState) {
    const auto shape = ShapeOf(out[0]);
    if (shape.size() != 3 || shape[0] != 1 || shape[1] != 3 || shape[2] <= 0)
      fail_shape(names[0], out[0], "[1, 3, hidden]");
    hidden_ = shape[2];
    heads_ = std::make_unique<M3Heads>(LoadM3Heads(files_.colbert_head, files_.sparse_head, hidden_));
    dim_ = hidden_;
    if (heads_->colbert_dim != dim_) {
      throw CoreError("ERR_MODEL_LAYOUT", "'" + files_.colbert_head + "' projects to " + std::to_string(heads_->colbert_dim) +
                                              " dims but the dense vectors have " + std::to_string(dim_) +
                                              "; BGE-M3 uses the same width for both.");
    }
    return;
  }
  size_t k = 0;
  int64_t dense_dim = 0, colbert_dim = 0;
  if (has_dense_) {
    const auto s = ShapeOf(out[k]);
    if (s.size() != 2 || s[0] != 1 || s[1] <= 0) fail_shape(names[k], out[k], "[1, dim]");
    dense_dim = s[1];
    ++k;
  }
  if (has_sparse_) {
    const auto s = ShapeOf(out[k]);
    const bool ok = (s.size() == 3 && s[0] == 1 && s[1] == 3 && s[2] == 1) || (s.size() == 2 && s[0] == 1 && s[1] == 3);
    if (!ok) fail_shape(names[k], out[k], "[1, 3, 1] or [1, 3]");
    ++k;
  }
  if (has_colbert_) {
    const auto s = ShapeOf(out[k]);
    if (s.size() != 3 || s[0] != 1 || s[1] != 2 || s[2] <= 0) fail_shape(names[k], out[k], "[1, 2, dim] (rows 1.. of the input)");
    colbert_dim = s[2];
  }
  if (dense_dim && colbert_dim && dense_dim != colbert_dim) {
    throw CoreError("ERR_MODEL_LAYOUT", "Dense vectors have " + std::to_string(dense_dim) + " dims but ColBERT vectors " +
                                            std::to_string(colbert_dim) + "; BGE-M3 uses the same width for both.");
  }
  dim_ = dense_dim ? dense_dim : colbert_dim;
  hidden_ = dim_;
}

EncodeResult Encoder::Encode(const EncodeRequest& request, CancelToken* cancel) const {
  ValidateRequest(request);
  auto missing = [&](bool want, bool have, const char* what) {
    if (want && !have)
      throw CoreError("ERR_INPUT", std::string("This model has no ") + what + " output (graph outputs: " + [&] {
        std::string s;
        for (const auto& n : session_->output_names()) s += (s.empty() ? "" : ", ") + n;
        return s;
      }() + "); do not request it.");
  };
  missing(request.dense, has_dense_, "dense");
  missing(request.sparse, has_sparse_, "sparse");
  missing(request.colbert, has_colbert_, "colbert");
  if (request.hidden && session_->kind() != GraphKind::kHiddenState)
    throw CoreError("ERR_MODEL_LAYOUT", "'" + files_.onnx + "' has the heads baked into the graph, so it does not output "
                    "last_hidden_state; fine-tuning the heads needs the BAAI layout (an ONNX graph with last_hidden_state "
                    "and the heads in colbert_linear / sparse_linear files).");

  const size_t count = request.offsets.size() - 1;
  EncodeResult result;
  result.count = static_cast<int64_t>(count);
  result.dim = dim_;
  auto length = [&](size_t i) { return static_cast<int64_t>(request.offsets[i + 1] - request.offsets[i]); };
  if (request.dense) result.dense.assign(count * dim_, 0.0f);
  if (request.colbert) {
    result.colbert_offsets.assign(count + 1, 0);
    for (size_t i = 0; i < count; ++i) result.colbert_offsets[i + 1] = result.colbert_offsets[i] + static_cast<uint32_t>(length(i) - 1);
    result.colbert.assign(static_cast<size_t>(result.colbert_offsets[count]) * dim_, 0.0f);
  }
  if (request.hidden) result.hidden.assign(static_cast<size_t>(request.offsets[count]) * hidden_, 0.0f);
  std::vector<std::vector<uint32_t>> sparse_ids(request.sparse ? count : 0);
  // The lexical weights' max(0, w) would turn a NaN token weight into nothing: checked per text.
  std::vector<uint8_t> sparse_non_finite(request.sparse ? count : 0, 0);
  std::vector<std::vector<float>> sparse_weights(request.sparse ? count : 0);
  // Per-worker scratch for the heads, which run in parallel over the texts of a batch.
  struct HeadScratch {
    std::vector<std::pair<uint32_t, float>> pairs;
    std::vector<float> token_weights;
  };
  std::vector<HeadScratch> scratch(static_cast<size_t>(head_threads_));
  const auto names = OutputsFor(request.dense, request.sparse, request.colbert);
  const bool hidden_kind = session_->kind() == GraphKind::kHiddenState;
  // CUDA session with GPU heads: last_hidden_state stays on the device, the heads run there and
  // only their results come back (hidden states requested for fine-tuning come to the host).
  const bool on_gpu = gpu_heads_ && hidden_kind && !request.hidden;
  std::vector<float> gpu_dense, gpu_sparse, gpu_colbert;
  std::vector<float> widened[3];  // 16-bit float outputs as floats, per output
  std::vector<int64_t> gpu_lengths, gpu_colbert_row;

  std::vector<int64_t> ids, mask;
  uint32_t begin = 0;
  for (uint32_t end : request.batch_ends) {
    if (cancel && cancel->cancelled()) throw CoreError("ERR_ABORTED", "encode was aborted.");
    const int64_t batch = end - begin;
    int64_t len = 0;
    for (uint32_t j = begin; j < end; ++j) len = std::max(len, length(request.order[j]));
    ids.assign(static_cast<size_t>(batch * len), 1);  // <pad> = 1
    mask.assign(static_cast<size_t>(batch * len), 0);
    for (int64_t b = 0; b < batch; ++b) {
      const uint32_t text = request.order[begin + b];
      const int32_t* src = request.ids.data() + request.offsets[text];
      for (int64_t t = 0; t < length(text); ++t) {
        ids[b * len + t] = src[t];
        mask[b * len + t] = 1;
      }
    }
    auto run_session = [&](bool device_outputs) {
      std::vector<Ort::Value> values;
      Ort::RunOptions options;
      const auto run_start = std::chrono::steady_clock::now();
      if (cancel) cancel->Attach(&options);
      try {
        values = session_->Run(ids.data(), mask.data(), batch, len, names, options, device_outputs);
      } catch (const Ort::Exception& e) {
        if (cancel) cancel->Detach();
        if (cancel && cancel->cancelled()) throw CoreError("ERR_ABORTED", "encode was aborted.");
        throw CoreError("ERR_RUNTIME", std::string("ONNX Runtime failed on a batch of ") + std::to_string(batch) +
                                           " texts of up to " + std::to_string(len) + " tokens: " + e.what());
      }
      if (cancel) cancel->Detach();
      CheckBatchShapes(values, names, batch, len);
      result.session_ms += MillisecondsSince(run_start);
      return values;
    };
    bool batch_on_gpu = on_gpu;
    std::vector<Ort::Value> out = run_session(batch_on_gpu);
    result.padded_tokens += batch * len;
    result.batches += 1;
    const auto heads_start = std::chrono::steady_clock::now();

    if (batch_on_gpu) {
      try {
        gpu_lengths.resize(static_cast<size_t>(batch));
        gpu_colbert_row.assign(static_cast<size_t>(batch) + 1, 0);
        for (int64_t b = 0; b < batch; ++b) {
          gpu_lengths[b] = length(request.order[begin + b]);
          gpu_colbert_row[b + 1] = gpu_colbert_row[b] + gpu_lengths[b] - 1;
        }
        if (request.dense) gpu_dense.resize(static_cast<size_t>(batch * hidden_));
        if (request.sparse) gpu_sparse.resize(static_cast<size_t>(batch * len));
        if (request.colbert) gpu_colbert.resize(static_cast<size_t>(gpu_colbert_row[batch] * dim_));
        gpu_heads_->Run(out[0].GetTensorRawData(), HiddenFormatOf(out[0]), batch, len, gpu_lengths.data(),
                        request.dense ? gpu_dense.data() : nullptr,
                        request.sparse ? gpu_sparse.data() : nullptr, request.colbert ? gpu_colbert.data() : nullptr);
      } catch (const CoreError& e) {
        if (e.code() != "ERR_DEVICE") throw;
        // The GPU heads failed (say, out of device memory beside ONNX Runtime's arena): this batch
        // again with its outputs on the host, for the CPU heads.
        batch_on_gpu = false;
        out.clear();
        out = run_session(false);
      }
    }
    size_t k = 0;
    const float* hidden = nullptr;
    const float* dense = nullptr;
    const float* sparse = nullptr;
    const float* colbert = nullptr;
    if (batch_on_gpu) {
      // The heads ran on the device; the copies below read their results.
    } else if (hidden_kind) {
      hidden = FloatData(out[0], &widened[0]);
    } else {
      if (request.dense) {
        dense = FloatData(out[k], &widened[k]);
        ++k;
      }
      if (request.sparse) {
        sparse = FloatData(out[k], &widened[k]);
        ++k;
      }
      if (request.colbert) colbert = FloatData(out[k], &widened[k]);
    }
    auto process = [&](int64_t b, int worker) {
      HeadScratch& mine = scratch[worker];
      const uint32_t text = request.order[begin + b];
      const int64_t n = length(text);
      const int32_t* text_ids = request.ids.data() + request.offsets[text];
      const float* h = hidden ? hidden + b * len * hidden_ : nullptr;
      if (batch_on_gpu) {
        if (request.dense) std::memcpy(result.dense.data() + text * dim_, gpu_dense.data() + b * hidden_, dim_ * sizeof(float));
        if (request.sparse) {
          const float* w = gpu_sparse.data() + b * len;
          sparse_non_finite[text] = FirstNonFinite(w, static_cast<size_t>(n)) < static_cast<size_t>(n);
          AggregateLexicalWeights(text_ids, w, n, 1, &sparse_ids[text], &sparse_weights[text], &mine.pairs);
        }
        if (request.colbert)
          std::memcpy(result.colbert.data() + static_cast<size_t>(result.colbert_offsets[text]) * dim_,
                      gpu_colbert.data() + gpu_colbert_row[b] * dim_, (n - 1) * dim_ * sizeof(float));
        return;
      }
      if (request.hidden) std::memcpy(result.hidden.data() + static_cast<size_t>(request.offsets[text]) * hidden_, h, n * hidden_ * sizeof(float));
      if (request.dense) {
        float* dst = result.dense.data() + text * dim_;
        if (h) {
          std::memcpy(dst, h, dim_ * sizeof(float));
          NormalizeL2(dst, dim_);
        } else {
          std::memcpy(dst, dense + b * dim_, dim_ * sizeof(float));
        }
      }
      if (request.sparse) {
        const float* w = sparse ? sparse + b * len : nullptr;
        if (h) {
          mine.token_weights.resize(n);
          SparseTokenWeights(*heads_, h, n, hidden_, mine.token_weights.data());
          w = mine.token_weights.data();
        }
        sparse_non_finite[text] = FirstNonFinite(w, static_cast<size_t>(n)) < static_cast<size_t>(n);
        AggregateLexicalWeights(text_ids, w, n, 1, &sparse_ids[text], &sparse_weights[text], &mine.pairs);
      }
      if (request.colbert) {
        float* dst = result.colbert.data() + static_cast<size_t>(result.colbert_offsets[text]) * dim_;
        if (h) ColbertRows(*heads_, h + hidden_, n - 1, hidden_, dst);
        else std::memcpy(dst, colbert + b * (len - 1) * dim_, (n - 1) * dim_ * sizeof(float));
      }
    };
    // The ColBERT head dominates: spread it over the session's threads once it is worth a
    // thread start (about a millisecond of work per thread).
    const double head_macs = hidden_kind && request.colbert && !batch_on_gpu
                                 ? static_cast<double>(batch) * len * hidden_ * dim_ : 0.0;
    const int threads = static_cast<int>(std::min<double>(head_threads_, std::max(1.0, head_macs / 2e7)));
    ParallelFor(batch, threads, process);
    result.heads_ms += MillisecondsSince(heads_start);
    begin = end;
  }
  if (request.sparse) {
    result.sparse_offsets.assign(count + 1, 0);
    for (size_t i = 0; i < count; ++i) result.sparse_offsets[i + 1] = result.sparse_offsets[i] + static_cast<uint32_t>(sparse_ids[i].size());
    result.sparse_ids.reserve(result.sparse_offsets[count]);
    result.sparse_weights.reserve(result.sparse_offsets[count]);
    for (size_t i = 0; i < count; ++i) {
      result.sparse_ids.insert(result.sparse_ids.end(), sparse_ids[i].begin(), sparse_ids[i].end());
      result.sparse_weights.insert(result.sparse_weights.end(), sparse_weights[i].begin(), sparse_weights[i].end());
    }
  }
  const auto bad_sparse = std::find(sparse_non_finite.begin(), sparse_non_finite.end(), 1);
  CheckFinite(request, result, bad_sparse == sparse_non_finite.end() ? -1 : bad_sparse - sparse_non_finite.begin());
  return result;
}

void Encoder::ReleaseMemory() const {
  if (session_->cpu_arena()) {
    const int64_t ids[3] = {0, 3, 2};
    const int64_t mask[3] = {1, 1, 1};
    Ort::RunOptions options;
    // Frees, at the end of this run, every arena region with nothing allocated in it.
    options.AddConfigEntry("memory.enable_memory_arena_shrinkage", "cpu:0");
    try {
      // One output is enough to run the graph: the first the model has.
      session_->Run(ids, mask, 1, 3, OutputsFor(has_dense_, !has_dense_ && has_sparse_, !has_dense_ && !has_sparse_), options);
    } catch (const Ort::Exception& e) {
      throw CoreError("ERR_RUNTIME", std::string("ONNX Runtime failed to shrink its memory arena: ") + e.what());
    }
  }
  malloc_trim(0);
}

void Encoder::CheckFinite(const EncodeRequest& request, const EncodeResult& result, int64_t sparse_text) const {
  // The heads' weights were checked at load, so a NaN or Inf here comes from the graph: weights
  // that hold one, or that overflow fp32 on this text. Either way the vectors are meaningless,
  // and stored in an index they would poison every search.
  auto text_of = [](const std::vector<uint32_t>& offsets, size_t row) {
    return static_cast<size_t>(std::upper_bound(offsets.begin(), offsets.end(), static_cast<uint32_t>(row)) - offsets.begin()) - 1;
  };
  auto fail = [&](const char* what, size_t text) {
    throw CoreError("ERR_MODEL_FILES", std::string("The model produced a non-finite value (NaN or Inf) in the ") + what +
                                           " output of text " + std::to_string(text) + ": the weights in '" + files_.onnx +
                                           "' (or its external data) hold NaN or Inf, or overflow float32. The model files are "
                                           "corrupted or not a trained BGE-M3; download them again.");
  };
  size_t at = FirstNonFinite(result.dense);
  if (at < result.dense.size()) fail("dense", at / static_cast<size_t>(dim_));
  if (sparse_text >= 0) fail("sparse", static_cast<size_t>(sparse_text));
  at = FirstNonFinite(result.colbert);
  if (at < result.colbert.size()) fail("colbert", text_of(result.colbert_offsets, at / static_cast<size_t>(dim_)));
  at = FirstNonFinite(result.hidden);
  if (at < result.hidden.size()) fail("last_hidden_state", text_of(request.offsets, at / static_cast<size_t>(hidden_)));
}

}  // namespace m3
