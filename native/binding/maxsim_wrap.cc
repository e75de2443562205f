// MaxSim and quantization for JS (lib/maxsim.ts validates arguments; this re-checks what guards
// memory: typed array kinds and lengths, offsets within the data).
//   [sync]  maxSimSync(queries, queryOffsets, docs, threads, isa?) -> Float32Array [queries x docs]
//   [async] maxSim(queries, queryOffsets, docs, threads)           -> Promise<Float32Array>
//   [sync]  quantize(data, dim, 'bf16' | 'i8')                     -> { data, scales? }
//   [sync]  fmaPeak(isa, seconds)                                   -> GFLOP/s of this core (benchmarks)
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "binding/js_values.h"
#include "binding/kernels_wrap.h"
#include "binding/promise_worker.h"
#include "core/core_error.h"
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

MaxSimCall ReadCall(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[2].IsObject() || !info[3].IsNumber()) {
    throw MakeError(env, "ERR_INPUT", "maxSim(queries, queryOffsets, docs, threads)");
  }
  MaxSimCall call;
  auto queries = Typed<float>(info[0], napi_float32_array, "a Float32Array for queries");
  auto qoff = Typed<uint32_t>(info[1], napi_uint32_array, "a Uint32Array for queryOffsets");
  Napi::Object docs = info[2].As<Napi::Object>();
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
  call.query_offsets.assign(qoff.Data(), qoff.Data() + qoff.ElementLength());
  if (call.query_offsets.empty() || call.query_offsets[0] != 0) throw MakeError(env, "ERR_INPUT", "queryOffsets must start at 0");
  for (size_t i = 1; i < call.query_offsets.size(); ++i)
    if (call.query_offsets[i] < call.query_offsets[i - 1]) throw MakeError(env, "ERR_INPUT", "queryOffsets must be non-decreasing");
  if (static_cast<uint64_t>(call.query_offsets.back()) * static_cast<uint64_t>(call.docs.dim) != queries.ElementLength()) {
    throw MakeError(env, "ERR_INPUT", "queries has " + std::to_string(queries.ElementLength()) + " floats but queryOffsets say " +
                                          std::to_string(call.query_offsets.back()) + " rows of " + std::to_string(call.docs.dim));
  }
  call.queries = queries.Data();
  call.threads = std::max(1, info[3].As<Napi::Number>().Int32Value());
  if (info.Length() > 4 && info[4].IsString()) {
    if (!m3::ParseIsaTier(info[4].As<Napi::String>().Utf8Value(), &call.tier)) throw MakeError(env, "ERR_INPUT", "bad isa");
    call.forced_tier = true;
  }
  // The score matrix must fit a typed array.
  const uint64_t cells = static_cast<uint64_t>(call.query_offsets.size() - 1) * static_cast<uint64_t>(call.docs.count);
  if (cells > (uint64_t{1} << 32)) throw MakeError(env, "ERR_INPUT", "maxSim: " + std::to_string(cells) + " scores would not fit a Float32Array; score fewer queries or documents per call");
  call.arrays.push_back(queries);
  call.arrays.push_back(data);
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

}  // namespace

void RegisterMaxSim(Napi::Env env, Napi::Object exports) {
  exports.Set("maxSimSync", Napi::Function::New(env, MaxSimSync, "maxSimSync"));
  exports.Set("maxSim", Napi::Function::New(env, MaxSimAsync, "maxSim"));
  exports.Set("quantize", Napi::Function::New(env, Quantize, "quantize"));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak, "fmaPeak"));
}

}  // namespace m3js
