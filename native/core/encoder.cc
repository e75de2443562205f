#include "core/encoder.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include <malloc.h>

#include "base/error.h"
#include "core/heads_gpu.h"
#include "core/ort_values.h"

namespace m3 {
namespace {

double MillisecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Encoder::~Encoder() = default;

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
  enc->Probe(settings.vocab_size);
  if (enc->session_->kind() == GraphKind::kHiddenState) {
    enc->LoadHeads(settings.session.intra_op_threads > 0 ? settings.session.intra_op_threads
                                                         : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  } else {
    enc->graph_heads_ = std::make_unique<GraphHeads>(*enc->session_, enc->dim_);
    enc->heads_ = enc->graph_heads_.get();
  }
  return enc;
}

void Encoder::LoadHeads(int head_threads) {
  M3Heads weights = LoadM3Heads(files_.colbert_head, files_.sparse_head, hidden_);
  if (weights.colbert_dim != dim_) {
    throw CoreError("ERR_MODEL_LAYOUT", "'" + files_.colbert_head + "' projects to " + std::to_string(weights.colbert_dim) +
                                            " dims but the dense vectors have " + std::to_string(dim_) +
                                            "; BGE-M3 uses the same width for both.");
  }
  cpu_heads_ = std::make_unique<CpuHeads>(*session_, std::move(weights), head_threads);
  heads_ = cpu_heads_.get();
  // The heads where the hidden states are. Without usable CUDA kernels here (a build without
  // them, or a driver older than their runtime) they stay on the CPU, which gives the same
  // results from outputs copied to the host.
  if (session_->cuda()) {
    gpu_heads_ = GpuHeads::Create(*session_, *cpu_heads_, &gpu_heads_why_);
    if (gpu_heads_) heads_ = gpu_heads_.get();
  }
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

void Encoder::Probe(int64_t vocab_size) {
  const int64_t top = std::max<int64_t>(vocab_size - 1, 2);
  const int64_t ids[3] = {0, top, 2};
  const int64_t mask[3] = {1, 1, 1};
  has_dense_ = session_->kind() == GraphKind::kHiddenState || !session_->dense_output().empty();
  has_sparse_ = session_->kind() == GraphKind::kHiddenState || !session_->sparse_output().empty();
  has_colbert_ = session_->kind() == GraphKind::kHiddenState || !session_->colbert_output().empty();
  const auto names = GraphOutputNames(*session_, OutputSet{OutputKind::kDense, OutputKind::kSparse, OutputKind::kColbert});
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
    dim_ = hidden_;
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

void Encoder::CheckOutputs(const EncodeRequest& request) const {
  auto missing = [&](bool want, bool have, const char* what) {
    if (!want || have) return;
    throw CoreError("ERR_INPUT", std::string("This model has no ") + what + " output (graph outputs: " +
                                     JoinNames(session_->output_names()) + "); do not request it.");
  };
  missing(request.outputs.dense(), has_dense_, "dense");
  missing(request.outputs.sparse(), has_sparse_, "sparse");
  missing(request.outputs.colbert(), has_colbert_, "colbert");
  if (request.outputs.hidden() && session_->kind() != GraphKind::kHiddenState)
    throw CoreError("ERR_MODEL_LAYOUT", "'" + files_.onnx + "' has the heads baked into the graph, so it does not output "
                    "last_hidden_state; fine-tuning the heads needs the BAAI layout (an ONNX graph with last_hidden_state "
                    "and the heads in colbert_linear / sparse_linear files).");
}

const Heads& Encoder::HeadsFor(const EncodeRequest& request) const {
  // Hidden states requested for fine-tuning come to the host, where the CPU heads read them.
  return request.outputs.hidden() ? *cpu_heads_ : *heads_;
}

std::vector<Ort::Value> Encoder::RunBatch(const PaddedBatch& batch, const std::vector<const char*>& names, bool device_outputs,
                                          CancelToken* cancel, EncodeResult* stats) const {
  std::vector<Ort::Value> values;
  Ort::RunOptions options;
  const auto start = std::chrono::steady_clock::now();
  if (cancel) cancel->Attach(&options);
  try {
    values = session_->Run(batch.ids.data(), batch.mask.data(), batch.batch, batch.len, names, options, device_outputs);
  } catch (const Ort::Exception& e) {
    if (cancel) cancel->Detach();
    if (cancel && cancel->cancelled()) throw CoreError("ERR_ABORTED", "encode was aborted.");
    throw CoreError("ERR_RUNTIME", std::string("ONNX Runtime failed on a batch of ") + std::to_string(batch.batch) +
                                       " texts of up to " + std::to_string(batch.len) + " tokens: " + e.what());
  }
  if (cancel) cancel->Detach();
  CheckBatchShapes(values, names, batch.batch, batch.len);
  stats->session_ms += MillisecondsSince(start);
  return values;
}

EncodeResult Encoder::Encode(const EncodeRequest& request, CancelToken* cancel) const {
  ValidateRequest(request);
  CheckOutputs(request);
  const Heads& heads = HeadsFor(request);
  const std::vector<const char*> names = heads.GraphOutputs(request.outputs);
  ResultWriter out(request, dim_, hidden_);
  PaddedBatch batch;
  const BatchRun run = [&](bool device_outputs) { return RunBatch(batch, names, device_outputs, cancel, &out.stats()); };
  uint32_t begin = 0;
  for (uint32_t end : request.batch_ends) {
    if (cancel && cancel->cancelled()) throw CoreError("ERR_ABORTED", "encode was aborted.");
    PackBatch(request, begin, end, &batch);
    heads.Apply(HeadsBatch{batch, out, run});
    out.stats().padded_tokens += batch.batch * batch.len;
    out.stats().batches += 1;
    begin = end;
  }
  return out.Finish(files_.onnx);
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
      OutputSet first;
      first.add(has_dense_ ? OutputKind::kDense : has_sparse_ ? OutputKind::kSparse : OutputKind::kColbert);
      session_->Run(ids, mask, 1, 3, GraphOutputNames(*session_, first), options);
    } catch (const Ort::Exception& e) {
      throw CoreError("ERR_RUNTIME", std::string("ONNX Runtime failed to shrink its memory arena: ") + e.what());
    }
  }
  malloc_trim(0);
}

}  // namespace m3
