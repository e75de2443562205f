// MaxSim and quantization for JS (lib/maxsim.ts validates arguments; this re-checks what guards
// memory: typed array kinds and lengths, offsets within the data).
//   [sync]  maxSimSync(queries, queryOffsets, docs, threads, isa?) -> Float32Array [queries x docs]
//   [async] maxSim(queries, queryOffsets, docs, threads)           -> Promise<Float32Array>
//   [sync]  quantize(data, dim, 'bf16' | 'i8')                     -> { data, scales? }
//   [sync]  fmaPeak(isa, seconds)                                   -> GFLOP/s of this core (benchmarks)
//   CUDA (native/kernels/cuda; documents resident on a GPU behind an opaque handle):
//   [sync]  cudaInfo()                                  -> { built, devices, why, names }
//   [async] cudaUpload(docs, 'f32' | 'bf16', deviceId)  -> Promise<handle>
//   [async] cudaMaxSim(handle, queries, queryOffsets)   -> Promise<Float32Array [queries x docs]>
//   [sync]  cudaDocsInfo(handle) -> { count, dim, rows, format, device, bytes } / cudaDispose(handle)
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "binding/js_values.h"
#include "binding/kernels_wrap.h"
#include "binding/promise_worker.h"
#include "base/error.h"
#include "kernels/cuda/maxsim_cuda.h"
#include "kernels/maxsim.h"
#include "kernels/peak_probe.h"
#include "kernels/quantize.h"

namespace m3js {
namespace {

/// Widest vectors accepted (BGE-M3's are 1024); keeps every size product and the int8 kernels'
/// 32-bit dot products far from overflow.
constexpr int64_t kMaxDim = 65536;

Napi::Value QuantizeImpl(const Napi::CallbackInfo& info);

template <typename T>
Napi::TypedArrayOf<T> Typed(const Napi::Value& v, napi_typedarray_type type, const std::string& what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw MakeError(v.Env(), "ERR_INPUT", "Expected " + what);
  return v.As<Napi::TypedArrayOf<T>>();
}

/// A scoring call's inputs as the kernels see them, plus the JS arrays they point into.
struct MaxSimCall {
  const float* queries = nullptr;
  std::vector<uint32_t> query_offsets;
  // A copy: the kernels trust offsets, and an async call must not see JS change them.
  std::vector<uint32_t> doc_offsets;
  m3::MultiVectorSet docs;
  int threads = 1;
  m3::IsaTier tier = m3::IsaTier::kSerial;
  bool forced_tier = false;
  std::vector<Napi::Value> arrays;
};

/// Reads a document set ({ format, dim, offsets, data, scales? }) into call->docs, copying the
/// offsets and keeping the JS arrays in call->arrays.
void ReadDocs(Napi::Env env, const Napi::Object& docs, MaxSimCall* out) {
  MaxSimCall& call = *out;
  std::string format_name = docs.Get("format").IsString() ? docs.Get("format").As<Napi::String>().Utf8Value() : "";
  if (!m3::ParseVectorFormat(format_name, &call.docs.format))
    throw MakeError(env, "ERR_INPUT", "docs.format must be 'f32', 'bf16' or 'i8'");
  const double dim = docs.Get("dim").IsNumber() ? docs.Get("dim").As<Napi::Number>().DoubleValue() : 0;
  if (!(dim >= 1) || dim > kMaxDim || dim != static_cast<int64_t>(dim))
    throw MakeError(env, "ERR_INPUT", "docs.dim must be an integer in [1, " + std::to_string(kMaxDim) + "]");
  call.docs.dim = static_cast<int64_t>(dim);
  auto offsets = Typed<uint32_t>(docs.Get("offsets"), napi_uint32_array, "a Uint32Array for docs.offsets");
  if (offsets.ElementLength() < 1) throw MakeError(env, "ERR_INPUT", "docs.offsets needs at least one entry");
  call.doc_offsets.assign(offsets.Data(), offsets.Data() + offsets.ElementLength());
  call.docs.count = static_cast<int64_t>(call.doc_offsets.size()) - 1;
  call.docs.offsets = call.doc_offsets.data();
  if (call.doc_offsets[0] != 0) throw MakeError(env, "ERR_INPUT", "docs.offsets[0] must be 0");
  for (size_t i = 0; i + 1 < call.doc_offsets.size(); ++i)
    if (call.doc_offsets[i + 1] < call.doc_offsets[i]) throw MakeError(env, "ERR_INPUT", "docs.offsets must be non-decreasing (at " + std::to_string(i + 1) + ")");
  const uint64_t rows = call.doc_offsets.back();
  const uint64_t elements = rows * static_cast<uint64_t>(call.docs.dim);
  Napi::Value data = docs.Get("data");
  size_t data_length = 0;
  if (call.docs.format == m3::VectorFormat::kF32) {
    auto d = Typed<float>(data, napi_float32_array, "a Float32Array for docs.data (format 'f32')");
    call.docs.data = d.Data();
    data_length = d.ElementLength();
  } else if (call.docs.format == m3::VectorFormat::kBF16) {
    auto d = Typed<uint16_t>(data, napi_uint16_array, "a Uint16Array for docs.data (format 'bf16')");
    call.docs.data = d.Data();
    data_length = d.ElementLength();
  } else {
    auto d = Typed<int8_t>(data, napi_int8_array, "an Int8Array for docs.data (format 'i8')");
    call.docs.data = d.Data();
    data_length = d.ElementLength();
    auto scales = Typed<float>(docs.Get("scales"), napi_float32_array, "a Float32Array for docs.scales (format 'i8')");
    if (scales.ElementLength() != rows)
      throw MakeError(env, "ERR_INPUT", "docs.scales needs one entry per row (" + std::to_string(rows) + ")");
    call.docs.scales = scales.Data();
    call.arrays.push_back(scales);
  }
  if (data_length != elements) {
    throw MakeError(env, "ERR_INPUT", "docs.data has " + std::to_string(data_length) + " elements but offsets say " +
                                          std::to_string(rows) + " rows of " + std::to_string(call.docs.dim));
  }
  call.arrays.push_back(data);
}

/// Reads queries (Float32Array rows) and their offsets against docs of call->docs.dim.
void ReadQueries(Napi::Env env, const Napi::Value& queries_value, const Napi::Value& offsets_value, MaxSimCall* out) {
  MaxSimCall& call = *out;
  auto queries = Typed<float>(queries_value, napi_float32_array, "a Float32Array for queries");
  auto qoff = Typed<uint32_t>(offsets_value, napi_uint32_array, "a Uint32Array for queryOffsets");
  call.query_offsets.assign(qoff.Data(), qoff.Data() + qoff.ElementLength());
  if (call.query_offsets.empty() || call.query_offsets[0] != 0) throw MakeError(env, "ERR_INPUT", "queryOffsets must start at 0");
  for (size_t i = 1; i < call.query_offsets.size(); ++i)
    if (call.query_offsets[i] < call.query_offsets[i - 1]) throw MakeError(env, "ERR_INPUT", "queryOffsets must be non-decreasing");
  if (static_cast<uint64_t>(call.query_offsets.back()) * static_cast<uint64_t>(call.docs.dim) != queries.ElementLength()) {
    throw MakeError(env, "ERR_INPUT", "queries has " + std::to_string(queries.ElementLength()) + " floats but queryOffsets say " +
                                          std::to_string(call.query_offsets.back()) + " rows of " + std::to_string(call.docs.dim));
  }
  call.queries = queries.Data();
  call.arrays.push_back(queries);
  // The score matrix must fit a typed array.
  const uint64_t cells = static_cast<uint64_t>(call.query_offsets.size() - 1) * static_cast<uint64_t>(call.docs.count);
  if (cells > (uint64_t{1} << 32)) throw MakeError(env, "ERR_INPUT", "maxSim: " + std::to_string(cells) + " scores would not fit a Float32Array; score fewer queries or documents per call");
}

MaxSimCall ReadCall(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[2].IsObject() || !info[3].IsNumber()) {
    throw MakeError(env, "ERR_INPUT", "maxSim(queries, queryOffsets, docs, threads)");
  }
  MaxSimCall call;
  ReadDocs(env, info[2].As<Napi::Object>(), &call);
  ReadQueries(env, info[0], info[1], &call);
  call.threads = std::max(1, info[3].As<Napi::Number>().Int32Value());
  if (info.Length() > 4 && info[4].IsString()) {
    if (!m3::ParseIsaTier(info[4].As<Napi::String>().Utf8Value(), &call.tier)) throw MakeError(env, "ERR_INPUT", "bad isa");
    call.forced_tier = true;
  }
  return call;
}

std::vector<float> Score(const MaxSimCall& call) {
  const int64_t num_queries = static_cast<int64_t>(call.query_offsets.size()) - 1;
  std::vector<float> scores(static_cast<size_t>(num_queries * call.docs.count));
  if (call.forced_tier) {
    m3::MaxSimBatchOn(call.tier, call.queries, call.query_offsets.data(), num_queries, call.docs, scores.data(), call.threads);
  } else {
    m3::MaxSimBatch(call.queries, call.query_offsets.data(), num_queries, call.docs, scores.data(), call.threads);
  }
  return scores;
}

Napi::Value MaxSimSync(const Napi::CallbackInfo& info) {
  return GuardSync(info.Env(), [&] {
    MaxSimCall call = ReadCall(info);
    return ToTypedArray(info.Env(), Score(call));
  }, "maxSimSync");
}

Napi::Value MaxSimAsync(const Napi::CallbackInfo& info) {
  auto call = std::make_shared<MaxSimCall>(ReadCall(info));
  std::vector<Napi::Value> keep = std::move(call->arrays);
  call->arrays.clear();
  auto work = [call]() -> Outcome {
    auto scores = std::make_shared<std::vector<float>>(Score(*call));
    return Outcome{[scores](Napi::Env env) -> Napi::Value { return ToTypedArray(env, std::move(*scores)); }, "", ""};
  };
  auto pending = std::make_shared<PendingPromise>(info.Env());
  for (const Napi::Value& v : keep) pending->Hold(v);
  Napi::Promise promise = pending->promise();
  StartDetached(pending, [pending, work] { pending->Settle(Guard(work, "maxSim")); });
  return promise;
}

Napi::Value Quantize(const Napi::CallbackInfo& info) {
  return GuardSync(info.Env(), [&] { return QuantizeImpl(info); }, "quantize");
}

Napi::Value QuantizeImpl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto data = Typed<float>(info[0], napi_float32_array, "a Float32Array of vectors");
  const int64_t dim = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int64Value() : 0;
  const std::string format = info.Length() > 2 && info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  if (dim <= 0 || dim > kMaxDim || data.ElementLength() % static_cast<size_t>(dim) != 0)
    throw MakeError(env, "ERR_INPUT", "quantize: dim must be a positive integer that divides the data length");
  const int64_t rows = static_cast<int64_t>(data.ElementLength()) / dim;
  for (size_t i = 0; i < data.ElementLength(); ++i) {
    if (!std::isfinite(data[i]))
      throw MakeError(env, "ERR_INPUT", "quantize: element " + std::to_string(i) + " (row " + std::to_string(i / dim) + ") is not finite");
  }
  Napi::Object out = Napi::Object::New(env);
  if (format == "bf16") {
    std::vector<uint16_t> bits(data.ElementLength());
    m3::QuantizeBf16(data.Data(), static_cast<int64_t>(bits.size()), bits.data());
    out.Set("data", ToTypedArray(env, std::move(bits)));
  } else if (format == "i8") {
    std::vector<int8_t> q(data.ElementLength());
    std::vector<float> scales(static_cast<size_t>(rows));
    m3::QuantizeI8(data.Data(), rows, dim, q.data(), scales.data());
    out.Set("data", ToTypedArray(env, std::move(q)));
    out.Set("scales", ToTypedArray(env, std::move(scales)));
  } else {
    throw MakeError(env, "ERR_INPUT", "quantize: format must be 'bf16' or 'i8'");
  }
  return out;
}

Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  m3::IsaTier tier = m3::DetectedTier();
  if (info.Length() > 0 && info[0].IsString() && !m3::ParseIsaTier(info[0].As<Napi::String>().Utf8Value(), &tier))
    throw MakeError(info.Env(), "ERR_INPUT", "fmaPeak: isa must be 'serial', 'avx2' or 'avx512'");
  const double seconds = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0.5;
  return Napi::Number::New(info.Env(), m3::MeasureFmaPeakGflops(tier, std::min(std::max(seconds, 0.01), 10.0)));
}

/// What a cudaUpload handle holds; disposing drops the documents, calls in flight keep theirs.
struct CudaDocs {
  static constexpr uint64_t kMagic = 0x6d3363756461646fULL;
  uint64_t magic = kMagic;
  std::shared_ptr<m3::cuda::DeviceMultiVectors> docs;
};

std::shared_ptr<m3::cuda::DeviceMultiVectors> CudaDocsOf(const Napi::Value& v) {
  if (!v.IsExternal() || !v.As<Napi::External<CudaDocs>>().Data() || v.As<Napi::External<CudaDocs>>().Data()->magic != CudaDocs::kMagic)
    throw MakeError(v.Env(), "ERR_INPUT", "Expected a GPU document set (from cudaUpload)");
  auto docs = v.As<Napi::External<CudaDocs>>().Data()->docs;
  if (!docs) throw MakeError(v.Env(), "ERR_DISPOSED", "This GPU document set has been disposed; upload it again.");
  return docs;
}

Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string why;
  const int devices = m3::cuda::DeviceCount(&why);
  Napi::Object out = Napi::Object::New(env);
  out.Set("built", m3::cuda::Built());
  out.Set("devices", devices);
  out.Set("why", why);
  Napi::Array names = Napi::Array::New(env, devices);
  for (int i = 0; i < devices; ++i) names.Set(static_cast<uint32_t>(i), m3::cuda::DeviceName(i));
  out.Set("names", names);
  return out;
}

Napi::Value CudaUpload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsObject() || !info[1].IsString() || !info[2].IsNumber())
    throw MakeError(env, "ERR_INPUT", "cudaUpload(docs, 'f32' | 'bf16', deviceId)");
  auto call = std::make_shared<MaxSimCall>();
  ReadDocs(env, info[0].As<Napi::Object>(), call.get());
  m3::VectorFormat store;
  if (!m3::ParseVectorFormat(info[1].As<Napi::String>().Utf8Value(), &store) || store == m3::VectorFormat::kI8)
    throw MakeError(env, "ERR_INPUT", "GPU documents are stored as 'f32' or 'bf16'");
  const int device = info[2].As<Napi::Number>().Int32Value();
  std::vector<Napi::Value> keep = std::move(call->arrays);
  call->arrays.clear();
  auto work = [call, store, device]() -> Outcome {
    std::shared_ptr<m3::cuda::DeviceMultiVectors> docs = m3::cuda::DeviceMultiVectors::Upload(call->docs, store, device);
    return Outcome{[docs](Napi::Env env) -> Napi::Value {
      auto* holder = new CudaDocs();
      holder->docs = docs;
      return Napi::External<CudaDocs>::New(env, holder, [](Napi::Env, CudaDocs* h) { delete h; });
    }, "", ""};
  };
  auto pending = std::make_shared<PendingPromise>(env);
  for (const Napi::Value& v : keep) pending->Hold(v);
  Napi::Promise promise = pending->promise();
  StartDetached(pending, [pending, work] { pending->Settle(Guard(work, "cudaUpload")); });
  return promise;
}

Napi::Value CudaMaxSim(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto docs = CudaDocsOf(info[0]);
  auto call = std::make_shared<MaxSimCall>();
  call->docs.dim = docs->dim();
  call->docs.count = docs->count();
  ReadQueries(env, info[1], info[2], call.get());
  std::vector<Napi::Value> keep = std::move(call->arrays);
  call->arrays.clear();
  auto work = [call, docs]() -> Outcome {
    const int64_t n = static_cast<int64_t>(call->query_offsets.size()) - 1;
    auto scores = std::make_shared<std::vector<float>>(static_cast<size_t>(n * docs->count()));
    docs->MaxSimBatch(call->queries, call->query_offsets.data(), n, scores->data());
    return Outcome{[scores](Napi::Env env) -> Napi::Value { return ToTypedArray(env, std::move(*scores)); }, "", ""};
  };
  auto pending = std::make_shared<PendingPromise>(env);
  for (const Napi::Value& v : keep) pending->Hold(v);
  Napi::Promise promise = pending->promise();
  StartDetached(pending, [pending, work] { pending->Settle(Guard(work, "cudaMaxSim")); });
  return promise;
}

Napi::Value CudaDocsInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto docs = CudaDocsOf(info[0]);
  Napi::Object out = Napi::Object::New(env);
  out.Set("count", static_cast<double>(docs->count()));
  out.Set("dim", static_cast<double>(docs->dim()));
  out.Set("rows", static_cast<double>(docs->rows()));
  out.Set("format", m3::VectorFormatName(docs->format()));
  out.Set("device", docs->device());
  out.Set("bytes", static_cast<double>(docs->device_bytes()));
  return out;
}

Napi::Value CudaDispose(const Napi::CallbackInfo& info) {
  if (info[0].IsExternal() && info[0].As<Napi::External<CudaDocs>>().Data() &&
      info[0].As<Napi::External<CudaDocs>>().Data()->magic == CudaDocs::kMagic)
    info[0].As<Napi::External<CudaDocs>>().Data()->docs.reset();
  return info.Env().Undefined();
}

}  // namespace

void RegisterMaxSim(Napi::Env env, Napi::Object exports, Napi::Object testing) {
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfo, "cudaInfo"));
  exports.Set("cudaUpload", Napi::Function::New(env, CudaUpload, "cudaUpload"));
  exports.Set("cudaMaxSim", Napi::Function::New(env, CudaMaxSim, "cudaMaxSim"));
  exports.Set("cudaDocsInfo", Napi::Function::New(env, CudaDocsInfo, "cudaDocsInfo"));
  exports.Set("cudaDispose", Napi::Function::New(env, CudaDispose, "cudaDispose"));
  exports.Set("maxSimSync", Napi::Function::New(env, MaxSimSync, "maxSimSync"));
  exports.Set("maxSim", Napi::Function::New(env, MaxSimAsync, "maxSim"));
  exports.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
  testing.Set("fmaPeak", Napi::Function::New(env, FmaPeak, "fmaPeak"));
}

}  // namespace m3js
