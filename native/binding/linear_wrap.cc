// The bf16 dense-layer kernel's entry points for tests and benchmarks (the encoder reaches it
// through the graph rewrite, core/linear_rewrite.h).
//   [sync] linearBf16Forward(w, b|null, in, out, x, rows, vector) -> Float32Array
//   [sync] linearBf16KernelTimes([rows, in, out], runs) -> Float64Array of ms per run
//   [sync] bf16Peak(seconds) -> this core's vdpbf16ps GFLOP/s (0 without AVX-512 BF16)
#include <algorithm>
#include <chrono>
#include <vector>

#include "binding/js_values.h"
#include "binding/kernels_wrap.h"
#include "kernels/linear_bf16.h"
#include "kernels/peak_probe.h"

namespace m3js {
namespace {

int64_t Dim(const Napi::Env& env, const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throw MakeError(env, "ERR_INPUT", std::string(what) + " must be a number");
  const int64_t d = v.As<Napi::Number>().Int64Value();
  if (d < 0 || d > (int64_t{1} << 24)) throw MakeError(env, "ERR_INPUT", std::string(what) + " must be in [0, 2^24]");
  return d;
}

/// linearBf16Forward(w [in*out], b [out] | null, in, out, x [rows*in], rows, vector): y = x · W + b
/// with the AVX-512 BF16 kernel (vector, where the CPU has it) or the serial oracle.
Napi::Value LinearBf16Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto w = CopyTypedArray<float>(info[0], napi_float32_array, "w");
  std::vector<float> b;
  if (!info[1].IsNull()) b = CopyTypedArray<float>(info[1], napi_float32_array, "b");
  const int64_t in = Dim(env, info[2], "in"), out = Dim(env, info[3], "out");
  auto x = CopyTypedArray<float>(info[4], napi_float32_array, "x");
  const int64_t rows = Dim(env, info[5], "rows");
  const bool vector = info[6].ToBoolean().Value();
  if (in < 1 || out < 1 || static_cast<int64_t>(w.size()) != in * out || (!b.empty() && static_cast<int64_t>(b.size()) != out) ||
      static_cast<int64_t>(x.size()) != rows * in) {
    throw MakeError(env, "ERR_INPUT", "linearBf16Forward: sizes do not match");
  }
  if (rows * out > (int64_t{1} << 28)) throw MakeError(env, "ERR_INPUT", "linearBf16Forward: the output must stay under 2^28 floats");
  if (vector && !m3::LinearBf16Accelerated())
    throw MakeError(env, "ERR_DEVICE", "linearBf16Forward: this CPU (at the active tier) has no AVX-512 BF16 kernel");
  const m3::PackedLinearBf16 layer = m3::PackLinearBf16(w.data(), b.empty() ? nullptr : b.data(), in, out);
  std::vector<float> y(static_cast<size_t>(rows * out));
  m3::LinearBf16Args a{&layer, x.data(), y.data(), rows};
  m3::LinearBf16Forward(vector, a);
  return ToTypedArray(env, std::move(y));
}

/// linearBf16KernelTimes([rows, in, out], runs): the vector kernel timed on the calling thread.
Napi::Value LinearBf16KernelTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsArray() || info[0].As<Napi::Array>().Length() != 3 || !info[1].IsNumber())
    throw MakeError(env, "ERR_INPUT", "linearBf16KernelTimes([rows, in, out], runs)");
  Napi::Array d = info[0].As<Napi::Array>();
  const int64_t rows = Dim(env, d.Get(0u), "rows"), in = Dim(env, d.Get(1u), "in"), out = Dim(env, d.Get(2u), "out");
  if (rows < 1 || in < 1 || out < 1 || rows * in > (int64_t{1} << 28) || in * out > (int64_t{1} << 28) ||
      rows * out > (int64_t{1} << 28))
    throw MakeError(env, "ERR_INPUT", "linearBf16KernelTimes: dims must be positive and the matrices under 2^28 elements");
  if (!m3::LinearBf16Accelerated())
    throw MakeError(env, "ERR_DEVICE", "linearBf16KernelTimes: this CPU (at the active tier) has no AVX-512 BF16 kernel");
  const int runs = std::clamp(info[1].As<Napi::Number>().Int32Value(), 1, 1000);
  std::vector<float> w(static_cast<size_t>(in * out)), x(static_cast<size_t>(rows * in)), y(static_cast<size_t>(rows * out));
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(static_cast<int64_t>(i * 37 % 101) - 50) / 500.0f;
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int64_t>(i * 53 % 97) - 48) / 48.0f;
  const m3::PackedLinearBf16 layer = m3::PackLinearBf16(w.data(), nullptr, in, out);
  m3::LinearBf16Args a{&layer, x.data(), y.data(), rows};
  m3::LinearBf16Forward(true, a);  // warm-up
  std::vector<double> ms(static_cast<size_t>(runs));
  for (int r = 0; r < runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    m3::LinearBf16Forward(true, a);
    ms[r] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  return ToTypedArray(env, std::move(ms));
}

Napi::Value Bf16Peak(const Napi::CallbackInfo& info) {
  const double seconds = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0.5;
  return Napi::Number::New(info.Env(), m3::MeasureBf16PeakGflops(std::min(std::max(seconds, 0.01), 10.0)));
}

}  // namespace

void RegisterLinear(Napi::Env env, Napi::Object testing) {
  testing.Set("linearBf16Forward", Napi::Function::New(env, LinearBf16Forward, "linearBf16Forward"));
  testing.Set("linearBf16KernelTimes", Napi::Function::New(env, LinearBf16KernelTimes, "linearBf16KernelTimes"));
  testing.Set("bf16Peak", Napi::Function::New(env, Bf16Peak, "bf16Peak"));
}

}  // namespace m3js
