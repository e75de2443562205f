#include "core/encoder_session.h"

#include <algorithm>
#include <fstream>

#include "graph/attention_fusion.h"
#include "base/error.h"
#include "graph/custom_ops.h"
#include "graph/fp16_rewrite.h"
#include "graph/linear_rewrite.h"
#include "core/ort_env.h"
#include "core/providers.h"
#include "base/cpu_features.h"
#include "kernels/linear_bf16.h"

namespace m3 {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return false;
  out->resize(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  return static_cast<bool>(in.read(out->data(), static_cast<std::streamsize>(out->size())));
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::string FindName(const std::vector<std::string>& names, std::initializer_list<const char*> wanted) {
  for (const char* w : wanted)
    if (std::find(names.begin(), names.end(), w) != names.end()) return w;
  return "";
}

}  // namespace

bool ParsePrecision(const std::string& name, Precision* out) {
  if (name == "fp32") *out = Precision::kFp32;
  else if (name == "bf16") *out = Precision::kBf16;
  else if (name == "fp16") *out = Precision::kFp16;
  else return false;
  return true;
}

bool ParseGraphOptimization(const std::string& name, GraphOptimizationLevel* out) {
  if (name == "disabled") *out = ORT_DISABLE_ALL;
  else if (name == "basic") *out = ORT_ENABLE_BASIC;
  else if (name == "extended") *out = ORT_ENABLE_EXTENDED;
  else if (name == "all") *out = ORT_ENABLE_ALL;
  else return false;
  return true;
}

void EncoderSession::OpenRewritten(const std::string& onnx_path, const SessionSettings& settings,
                                   const Ort::SessionOptions& options) {
  const bool fuse = settings.fused_attention && ActiveTier() != IsaTier::kSerial;
  const bool bf16 = settings.precision == Precision::kBf16 && LinearBf16Accelerated();
  if (settings.fused_attention && !fuse)
    attention_note_ = "the fused attention kernel needs AVX2 or AVX-512 (this CPU runs the serial kernels)";
  if (settings.precision == Precision::kBf16 && !bf16)
    precision_note_ = "bf16 needs a CPU with AVX-512 BF16 (and the avx512 kernel tier); the model runs in fp32";
  if (!fuse && !bf16) return;
  // A bf16 graph ONNX Runtime refuses is retried with the fused attention alone, in fp32.
  if (TryOpenRewritten(onnx_path, fuse, bf16, options) == Rewritten::kRefusedBf16 && fuse)
    TryOpenRewritten(onnx_path, true, false, options);
}

EncoderSession::Rewritten EncoderSession::TryOpenRewritten(const std::string& onnx_path, bool fuse, bool bf16,
                                                           const Ort::SessionOptions& options) {
  std::string model;
  int fused = 0, layers = 0;
  if (!ReadFile(onnx_path, &model)) return Rewritten::kNothing;  // the plain load reports the file
  // Each rewrite holds the model and its rewritten copy (a graph with its weights inside may be
  // 2 GB); the older copy is freed before the next. The dense layers go first: the attention's
  // products are in bf16 only where they are.
  if (bf16) {
    LinearRewrite linears = RewriteLinearsBf16(model);
    layers = linears.layers;
    if (layers == 0) precision_note_ = "no dense layer of the graph (MatMul or Gemm by a float initializer) to run in bf16; the model runs in fp32";
    else model.swap(linears.model);
  }
  if (fuse) {
    AttentionFusion fusion = FuseAttentionBlocks(model, layers > 0);
    fused = fusion.fused;
    if (fused == 0) attention_note_ = "no attention block of the graph matches the fused pattern";
    else model.swap(fusion.model);
  }
  if (fused == 0 && layers == 0) return Rewritten::kNothing;
  Ort::SessionOptions rewritten = options.Clone();
  AddBgeM3Ops(rewritten);
  try {
    OpenFromMemory(onnx_path, model, rewritten);
    fused_blocks_ = fused;
    bf16_layers_ = layers;
    if (fused > 0) attention_note_.clear();  // a note from a refused first try
    return Rewritten::kOpened;
  } catch (const Ort::Exception& e) {
    // For instance a float16 graph (the kernels are fp32): the graph's own ops run instead.
    const std::string why = std::string("ONNX Runtime refused the rewritten graph: ") + e.what();
    if (fused > 0) attention_note_ = why;
    if (layers > 0) precision_note_ = why + "; the model runs in fp32";
    return layers > 0 ? Rewritten::kRefusedBf16 : Rewritten::kRefused;
  }
}

void EncoderSession::OpenFromMemory(const std::string& onnx_path, const std::string& model,
                                    const Ort::SessionOptions& options) {
  Ort::SessionOptions opened = options.Clone();
  opened.AddConfigEntry("session.model_external_initializers_file_folder_path", DirectoryOf(onnx_path).c_str());
  session_ = Ort::Session(SharedOrtEnv(), model.data(), model.size(), opened);
}

void EncoderSession::OpenFp16(const std::string& onnx_path, const Ort::SessionOptions& options, bool host) {
  Fp16Rewrite converted;
  {
    std::string model;
    if (!ReadFile(onnx_path, &model)) return;  // the plain load reports the file
    converted = RewriteFloat16(model, DirectoryOf(onnx_path));
  }
  if (converted.model.empty()) {
    precision_note_ = "the graph was not converted to fp16 (" + converted.problem + "); the model runs in fp32";
    return;
  }
  if (converted.tensors == 0) {
    precision_note_ = "the graph holds no float weight to convert to fp16; the model runs as exported";
    return;
  }
  try {
    OpenFromMemory(onnx_path, converted.model, options);
  } catch (const Ort::Exception& e) {
    precision_note_ = std::string("ONNX Runtime refused the fp16 graph: ") + e.what() + "; the model runs in fp32";
    return;
  }
  fp16_ = {converted.tensors, converted.clamped, converted.layer_norms, converted.fp32_nodes, converted.casts};
  if (host)
    precision_note_ = "fp16 is the GPU's path: on the CPU, ONNX Runtime runs the ops it has no fp16 kernel for "
                      "through casts to fp32, which is slower than fp32 (bf16 is the CPU's fast path)";
}

EncoderSession::EncoderSession(const std::string& onnx_path, const SessionSettings& settings)
    : cpu_memory_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)) {
  Ort::SessionOptions options;
  if (settings.intra_op_threads > 0) options.SetIntraOpNumThreads(settings.intra_op_threads);
  options.SetInterOpNumThreads(std::max(1, settings.inter_op_threads));
  options.SetGraphOptimizationLevel(settings.graph_optimization);
  // Spinning intra-op threads keep their cores busy after a run, exactly when the native heads
  // want them; off by default (it also stops an idle server from burning CPU).
  options.AddConfigEntry("session.intra_op.allow_spinning", settings.allow_spinning ? "1" : "0");
  cpu_arena_ = settings.memory_arena;
  if (settings.memory_arena) options.EnableCpuMemArena();
  else options.DisableCpuMemArena();
  if (!settings.optimized_graph_path.empty()) options.SetOptimizedModelFilePath(settings.optimized_graph_path.c_str());
  provider_ = settings.provider;
  const ExecutionProvider& provider = provider_.get();
  provider.Append(options, provider_);
  device_memory_ = provider.DeviceMemory(provider_);
  if (!provider.host() && settings.precision == Precision::kBf16)
    precision_note_ = "bf16 dense layers are a CPU path; on a GPU the graph runs as exported (load an fp16 export for 16-bit math)";
  if (settings.precision == Precision::kFp16) OpenFp16(onnx_path, options, provider.host());
  else if (provider.host()) OpenRewritten(onnx_path, settings, options);
  try {
    if (!session_) session_ = Ort::Session(SharedOrtEnv(), onnx_path.c_str(), options);
  } catch (const Ort::Exception& e) {
    // On a GPU, creating the session also starts the provider and copies the weights to the
    // device: its failures (out of memory, CUDA, cuBLAS or cuDNN) are the device's, not the files'.
    const std::string what = e.what();
    if (provider.IsDeviceFailure(what)) {
      throw CoreError("ERR_DEVICE", "ONNX Runtime could not start '" + onnx_path + "' on " + provider.DeviceName(provider_) +
                                        ": " + what + ". Check the device's free memory (and gpuMemLimit) and the CUDA 12 / cuDNN 9 "
                                        "libraries, or load with device 'cpu'.");
    }
    throw CoreError("ERR_MODEL_FILES", "ONNX Runtime could not load '" + onnx_path + "': " + what +
                                           ". If the graph keeps its weights in external data "
                                           "(model.onnx_data), that file must sit next to it.");
  }

  Ort::AllocatorWithDefaultOptions allocator;
  for (size_t i = 0; i < session_.GetInputCount(); ++i)
    inputs_.push_back(session_.GetInputNameAllocated(i, allocator).get());
  for (size_t i = 0; i < session_.GetOutputCount(); ++i)
    outputs_.push_back(session_.GetOutputNameAllocated(i, allocator).get());

  for (const char* required : {"input_ids", "attention_mask"}) {
    if (std::find(inputs_.begin(), inputs_.end(), required) == inputs_.end()) {
      throw CoreError("ERR_MODEL_LAYOUT", "'" + onnx_path + "' has no '" + required + "' input (inputs: " +
                                              JoinNames(inputs_) + "); a BGE-M3 graph takes input_ids and attention_mask.");
    }
  }
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const std::string& name = inputs_[i];
    if (name != "input_ids" && name != "attention_mask" && name != "token_type_ids") {
      throw CoreError("ERR_MODEL_LAYOUT", "'" + onnx_path + "' has an unexpected input '" + name +
                                              "' (inputs: " + JoinNames(inputs_) + ").");
    }
    const auto type = session_.GetInputTypeInfo(i).GetTensorTypeAndShapeInfo().GetElementType();
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 && type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32) {
      throw CoreError("ERR_MODEL_LAYOUT", "'" + onnx_path + "' input '" + name + "' has ONNX element type " +
                                              std::to_string(static_cast<int>(type)) +
                                              "; a BGE-M3 graph takes int64 (or int32) token ids and masks.");
    }
    input_int32_.push_back(type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
  }

  hidden_ = FindName(outputs_, {"last_hidden_state"});
  dense_ = FindName(outputs_, {"dense_vecs", "dense_embeddings"});
  sparse_ = FindName(outputs_, {"sparse_vecs", "sparse_weights"});
  colbert_ = FindName(outputs_, {"colbert_vecs", "colbert_vectors"});
  if (!dense_.empty() || !sparse_.empty() || !colbert_.empty()) {
    kind_ = GraphKind::kHeadsBaked;
  } else if (!hidden_.empty()) {
    kind_ = GraphKind::kHiddenState;
  } else {
    throw CoreError("ERR_MODEL_LAYOUT",
                    "Unknown model layout: '" + onnx_path + "' has outputs [" + JoinNames(outputs_) +
                        "]. Expected last_hidden_state (the BAAI/bge-m3 snapshot, heads in "
                        "colbert_linear.pt and sparse_linear.pt) or heads-baked outputs "
                        "dense_vecs/sparse_vecs/colbert_vecs (or dense_embeddings/sparse_weights/colbert_vectors).");
  }
}

std::vector<Ort::Value> EncoderSession::Run(const int64_t* ids, const int64_t* mask, int64_t batch,
                                            int64_t len, const std::vector<const char*>& outputs,
                                            Ort::RunOptions& options, bool on_device) {
  if (on_device && !device_memory_) throw CoreError("ERR_INPUT", "outputs in device memory need a session on a device");
  // The inputs' copies at binding and the synchronisations run on the thread's current device.
  provider_.get().MakeCurrent(provider_);
  const int64_t shape[2] = {batch, len};
  const size_t count = static_cast<size_t>(batch * len);
  std::vector<int64_t> token_types;
  std::vector<std::vector<int32_t>> narrow;  // int32 copies for a graph that takes int32
  narrow.reserve(inputs_.size());
  Ort::IoBinding binding(session_);
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const std::string& name = inputs_[i];
    const int64_t* data = nullptr;
    if (name == "input_ids") data = ids;
    else if (name == "attention_mask") data = mask;
    else {
      token_types.assign(count, 0);
      data = token_types.data();
    }
    // Host inputs: a device session copies them to the device itself.
    if (input_int32_[i]) {
      // Token ids (below the vocabulary size), 0/1 masks and zero token types all fit.
      narrow.emplace_back(data, data + count);
      binding.BindInput(name.c_str(), Ort::Value::CreateTensor<int32_t>(cpu_memory_, narrow.back().data(), count, shape, 2));
    } else {
      binding.BindInput(name.c_str(), Ort::Value::CreateTensor<int64_t>(cpu_memory_, const_cast<int64_t*>(data), count, shape, 2));
    }
  }
  for (const char* name : outputs) binding.BindOutput(name, on_device ? device_memory_ : cpu_memory_);
  binding.SynchronizeInputs();  // a CUDA session's input copies have landed
  session_.Run(options, binding);
  binding.SynchronizeOutputs();
  return binding.GetOutputValues();
}

}  // namespace m3
