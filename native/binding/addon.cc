// Module entry: registers the classes and the free functions of the raw native module
// (lib/native.ts declares its exact shape).
//   [sync] runtimeInfo()            -> { ortVersion, providers, ortLibraryDir, cudaMissing, cudaProviderError }
//   [sync] capabilities()           -> { detected, active, features }
//   [sync] setIsa(name)             -> the tier now in use
//   [sync] readTensorFile(path)     -> { [name]: { shape, data: Float32Array } }
//   [sync] graphPositionRows(path)  -> rows of the graph's position-embedding table (0: none found)
//   testing: functions for tests and benchmarks only (binding/kernels_wrap.h lists the rest):
//   [sync] testing.linearForward(w, b, out, in, x, rows, isa) -> Float32Array (kernel checks)
//   [sync] testing.attentionForward(q, kt, v, mask|null, dims, maskStrides, scale, isa, bf16?) -> Float32Array
//   [sync] testing.attentionKernelTimes(dims, isa, runs, bf16?) -> Float64Array of ms per run (benchmark)
//   [sync] testing.fp16Graph(path) -> { model: Buffer (empty: not converted), problem, tensors, clamped, layerNorms, fp32Nodes, casts }
//          testing.outputKinds, testing.executionProviders: the names of the addon's tables
#include <napi.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "binding/addon_data.h"
#include "binding/encoder_wrap.h"
#include "binding/js_values.h"
#include "binding/kernels_wrap.h"
#include "binding/promise_worker.h"
#include "base/error.h"
#include "core/ort_env.h"
#include "core/outputs.h"
#include "core/provider_cuda.h"
#include "core/providers.h"
#include "graph/fp16_rewrite.h"
#include "graph/graph_facts.h"
#include "weights/tensor_file.h"
#include "kernels/attention.h"
#include "base/cpu_features.h"
#include "kernels/linear_f32.h"

namespace m3js {
namespace {

Napi::Array StringArray(Napi::Env env, const std::vector<std::string>& items) {
  Napi::Array a = Napi::Array::New(env, items.size());
  for (size_t i = 0; i < items.size(); ++i) a.Set(static_cast<uint32_t>(i), items[i]);
  return a;
}

Napi::Value RuntimeInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("ortVersion", m3::OrtVersion());
  o.Set("providers", StringArray(env, m3::OrtAvailableProviders()));
  o.Set("ortLibraryDir", m3::OrtLibraryDir());
  o.Set("cudaMissing", StringArray(env, m3::MissingCudaProviderLibraries()));
  o.Set("cudaProviderError", m3::CudaProviderLoadError());
  o.Set("hardwareThreads", Napi::Number::New(env, std::thread::hardware_concurrency()));
  return o;
}

Napi::Value Capabilities(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const m3::CpuFeatures& f = m3::DetectCpuFeatures();
  Napi::Object features = Napi::Object::New(env);
  features.Set("avx2", f.avx2);
  features.Set("fma", f.fma);
  features.Set("avxVnni", f.avx_vnni);
  features.Set("avx512f", f.avx512f);
  features.Set("avx512bw", f.avx512bw);
  features.Set("avx512vl", f.avx512vl);
  features.Set("avx512dq", f.avx512dq);
  features.Set("avx512bf16", f.avx512_bf16);
  features.Set("avx512vnni", f.avx512_vnni);
  features.Set("avx512vp2intersect", f.avx512_vp2intersect);
  Napi::Object o = Napi::Object::New(env);
  o.Set("detected", m3::IsaTierName(m3::DetectedTier()));
  o.Set("active", m3::IsaTierName(m3::ActiveTier()));
  o.Set("features", features);
  return o;
}

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  m3::IsaTier tier;
  if (info.Length() < 1 || !info[0].IsString() || !m3::ParseIsaTier(info[0].As<Napi::String>().Utf8Value(), &tier)) {
    throw MakeError(info.Env(), "ERR_INPUT", "Expected 'serial', 'avx2' or 'avx512' for isa");
  }
  return Napi::String::New(info.Env(), m3::IsaTierName(m3::SetActiveTier(tier)));
}

Napi::Value GraphPositionRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw MakeError(env, "ERR_INPUT", "Expected a path for graphPositionRows");
  int64_t rows = 0;
  GuardSync(env, [&] {
    const std::vector<uint8_t> bytes = m3::weights::ReadFileBytes(info[0].As<Napi::String>().Utf8Value());
    rows = m3::PositionTableRows(std::string(bytes.begin(), bytes.end()));
    return env.Undefined();
  }, "graphPositionRows");
  return Napi::Number::New(env, static_cast<double>(rows));
}

Napi::Value Fp16Graph(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw MakeError(env, "ERR_INPUT", "Expected a path for fp16Graph");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  m3::Fp16Rewrite r;
  GuardSync(env, [&] {
    const std::vector<uint8_t> bytes = m3::weights::ReadFileBytes(path);
    const size_t slash = path.find_last_of('/');
    r = m3::RewriteFloat16(std::string(bytes.begin(), bytes.end()), slash == std::string::npos ? "." : path.substr(0, slash));
    return env.Undefined();
  }, "fp16Graph");
  Napi::Object o = Napi::Object::New(env);
  o.Set("model", Napi::Buffer<char>::Copy(env, r.model.data(), r.model.size()));
  o.Set("problem", r.problem);
  o.Set("tensors", Napi::Number::New(env, static_cast<double>(r.tensors)));
  o.Set("clamped", Napi::Number::New(env, static_cast<double>(r.clamped)));
  o.Set("layerNorms", Napi::Number::New(env, r.layer_norms));
  o.Set("fp32Nodes", Napi::Number::New(env, r.fp32_nodes));
  o.Set("casts", Napi::Number::New(env, r.casts));
  return o;
}

Napi::Value ReadTensorFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw MakeError(env, "ERR_INPUT", "Expected a path for readTensorFile");
  m3::StateDict dict;
  GuardSync(env, [&] {
    dict = m3::LoadTensorFile(info[0].As<Napi::String>().Utf8Value());
    return env.Undefined();
  }, "readTensorFile");
  Napi::Object o = Napi::Object::New(env);
  for (auto& kv : dict) {
    Napi::Object t = Napi::Object::New(env);
    Napi::Array shape = Napi::Array::New(env, kv.second.shape.size());
    for (size_t i = 0; i < kv.second.shape.size(); ++i)
      shape.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(kv.second.shape[i])));
    t.Set("shape", shape);
    t.Set("data", ToTypedArray(env, std::move(kv.second.data)));
    o.Set(kv.first, t);
  }
  return o;
}

Napi::Value LinearForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto w = CopyTypedArray<float>(info[0], napi_float32_array, "w");
  auto b = CopyTypedArray<float>(info[1], napi_float32_array, "b");
  const int64_t out = info[2].As<Napi::Number>().Int64Value(), in = info[3].As<Napi::Number>().Int64Value();
  auto x = CopyTypedArray<float>(info[4], napi_float32_array, "x");
  const int64_t rows = info[5].As<Napi::Number>().Int64Value();
  m3::IsaTier tier;
  if (!m3::ParseIsaTier(info[6].As<Napi::String>().Utf8Value(), &tier)) throw MakeError(env, "ERR_INPUT", "bad isa");
  if (out <= 0 || in <= 0 || rows < 0 || static_cast<int64_t>(w.size()) != out * in ||
      static_cast<int64_t>(b.size()) != out || static_cast<int64_t>(x.size()) != rows * in) {
    throw MakeError(env, "ERR_INPUT", "linearForward: sizes do not match");
  }
  const m3::PackedLinear layer = m3::PackLinear(w.data(), b.data(), out, in);
  std::vector<float> y(static_cast<size_t>(rows * out));
  m3::LinearForwardOn(tier, layer, x.data(), rows, in, y.data(), out);
  return ToTypedArray(env, std::move(y));
}

/// attentionForward(q, kt, v, mask | null, [batch, heads, qLen, kvLen, headDim, vDim],
/// [maskStrideB, maskStrideH, maskStrideQ], scale, isa, bf16?): the fused attention on one tier
/// (bf16: the precision 'bf16' products).
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto q = CopyTypedArray<float>(info[0], napi_float32_array, "q");
  auto kt = CopyTypedArray<float>(info[1], napi_float32_array, "kt");
  auto v = CopyTypedArray<float>(info[2], napi_float32_array, "v");
  std::vector<float> mask;
  if (!info[3].IsNull()) mask = CopyTypedArray<float>(info[3], napi_float32_array, "mask");
  auto ints = [&](const Napi::Value& value, size_t n) {
    if (!value.IsArray() || value.As<Napi::Array>().Length() != n) throw MakeError(env, "ERR_INPUT", "attentionForward: bad dims");
    std::vector<int64_t> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = value.As<Napi::Array>().Get(static_cast<uint32_t>(i)).As<Napi::Number>().Int64Value();
    return out;
  };
  const std::vector<int64_t> d = ints(info[4], 6), ms = ints(info[5], 3);
  m3::IsaTier tier;
  if (!m3::ParseIsaTier(info[7].As<Napi::String>().Utf8Value(), &tier)) throw MakeError(env, "ERR_INPUT", "bad isa");
  m3::AttentionArgs a;
  a.batch = d[0], a.heads = d[1], a.q_len = d[2], a.kv_len = d[3], a.head_dim = d[4], a.v_dim = d[5];
  for (int64_t x : d)
    if (x < 1) throw MakeError(env, "ERR_INPUT", "attentionForward: dims must be positive");
  const int64_t bh = a.batch * a.heads;
  if (static_cast<int64_t>(q.size()) != bh * a.q_len * a.head_dim || static_cast<int64_t>(kt.size()) != bh * a.head_dim * a.kv_len ||
      static_cast<int64_t>(v.size()) != bh * a.kv_len * a.v_dim) {
    throw MakeError(env, "ERR_INPUT", "attentionForward: sizes do not match");
  }
  if (!mask.empty()) {
    const int64_t last = (a.batch - 1) * ms[0] + (a.heads - 1) * ms[1] + (a.q_len - 1) * ms[2] + a.kv_len;
    if (ms[0] < 0 || ms[1] < 0 || ms[2] < 0 || last > static_cast<int64_t>(mask.size()))
      throw MakeError(env, "ERR_INPUT", "attentionForward: the mask is too small for its strides");
    a.mask = mask.data();
    a.mask_stride_b = ms[0], a.mask_stride_h = ms[1], a.mask_stride_q = ms[2];
  }
  a.q = q.data(), a.kt = kt.data(), a.v = v.data();
  a.scale = info[6].As<Napi::Number>().FloatValue();
  a.bf16 = info.Length() > 8 && info[8].ToBoolean().Value();
  std::vector<float> out(static_cast<size_t>(bh * a.q_len * a.v_dim));
  a.out = out.data();
  m3::AttentionForwardOn(tier, a);
  return ToTypedArray(env, std::move(out));
}

/// attentionKernelTimes([batch, heads, qLen, kvLen, headDim, vDim], isa, runs): the kernel timed
/// on the calling thread over inputs allocated (and touched) once, without a mask.
Napi::Value AttentionKernelTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsString() || !info[2].IsNumber())
    throw MakeError(env, "ERR_INPUT", "attentionKernelTimes(dims, isa, runs)");
  Napi::Array d = info[0].As<Napi::Array>();
  m3::AttentionArgs a;
  int64_t* fields[] = {&a.batch, &a.heads, &a.q_len, &a.kv_len, &a.head_dim, &a.v_dim};
  if (d.Length() != 6) throw MakeError(env, "ERR_INPUT", "attentionKernelTimes: dims has 6 entries");
  for (uint32_t i = 0; i < 6; ++i) {
    *fields[i] = d.Get(i).As<Napi::Number>().Int64Value();
    if (*fields[i] < 1 || *fields[i] > (1 << 20)) throw MakeError(env, "ERR_INPUT", "attentionKernelTimes: dims must be in [1, 2^20]");
  }
  m3::IsaTier tier;
  if (!m3::ParseIsaTier(info[1].As<Napi::String>().Utf8Value(), &tier)) throw MakeError(env, "ERR_INPUT", "bad isa");
  const int runs = std::max(1, info[2].As<Napi::Number>().Int32Value());
  const int64_t bh = a.batch * a.heads;
  std::vector<float> q(bh * a.q_len * a.head_dim), kt(bh * a.head_dim * a.kv_len), v(bh * a.kv_len * a.v_dim),
      out(bh * a.q_len * a.v_dim);
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(static_cast<int64_t>(i * 37 % 101) - 50) / 50.0f;
  for (size_t i = 0; i < kt.size(); ++i) kt[i] = static_cast<float>(static_cast<int64_t>(i * 53 % 97) - 48) / 48.0f;
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(static_cast<int64_t>(i * 29 % 89) - 44) / 44.0f;
  a.q = q.data(), a.kt = kt.data(), a.v = v.data(), a.out = out.data();
  a.scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  a.bf16 = info.Length() > 3 && info[3].ToBoolean().Value();
  m3::AttentionForwardOn(tier, a);  // warm-up
  std::vector<double> ms(static_cast<size_t>(runs));
  for (int r = 0; r < runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    m3::AttentionForwardOn(tier, a);
    ms[r] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  return ToTypedArray(env, std::move(ms));
}

void Cleanup(void* arg) {
  // The environment is going away (process exit or worker termination): stop every model that
  // was not disposed, then wait for all other work on the addon's threads (loads, closes,
  // batched scoring), so no thread outlives the environment or reads its memory afterwards.
  auto* data = static_cast<AddonData*>(arg);
  for (const auto& state : data->live_models) state->Shutdown();
  data->live_models.clear();
  data->in_flight->ShutDownAndWait();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  data->encoder_constructor = Napi::Persistent(EncoderWrap::Define(env));
  env.SetInstanceData<AddonData>(data);
  napi_add_env_cleanup_hook(env, Cleanup, data);
  Napi::Object testing = Napi::Object::New(env);
  exports.Set("Encoder", data->encoder_constructor.Value());
  exports.Set("runtimeInfo", Napi::Function::New(env, RuntimeInfo, "runtimeInfo"));
  exports.Set("capabilities", Napi::Function::New(env, Capabilities, "capabilities"));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa, "setIsa"));
  exports.Set("readTensorFile", Napi::Function::New(env, ReadTensorFile, "readTensorFile"));
  exports.Set("graphPositionRows", Napi::Function::New(env, GraphPositionRows, "graphPositionRows"));
  RegisterMaxSim(env, exports, testing);
  RegisterSparse(env, exports, testing);
  RegisterIndex(env, exports);
  RegisterTrain(env, exports);
  RegisterLinear(env, testing);
  // For tests and benchmarks only: single kernels on a chosen tier, their timings, the core's
  // peak rates, and the tables JavaScript mirrors.
  testing.Set("linearForward", Napi::Function::New(env, LinearForward, "linearForward"));
  testing.Set("attentionForward", Napi::Function::New(env, AttentionForward, "attentionForward"));
  testing.Set("attentionKernelTimes", Napi::Function::New(env, AttentionKernelTimes, "attentionKernelTimes"));
  Napi::Array output_kinds = Napi::Array::New(env);
  for (const auto& k : m3::kOutputKinds) output_kinds.Set(output_kinds.Length(), k.name);
  testing.Set("fp16Graph", Napi::Function::New(env, Fp16Graph, "fp16Graph"));
  testing.Set("outputKinds", output_kinds);
  testing.Set("executionProviders", StringArray(env, m3::ProviderNames()));
  exports.Set("testing", testing);
  return exports;
}

}  // namespace
}  // namespace m3js

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return m3js::Init(env, exports); }

NODE_API_MODULE(bge_m3, InitModule)
