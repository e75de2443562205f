// Training functions of the raw native module (lib/train.ts validates their arguments).
//   [sync]  m3Loss(dense, lex, colbert, target, queries, passages, options)
//             -> { loss, l, lDistill, dense, lex, colbert, inter, distillDense, distillLex,
//                  distillColbert, gradDense, gradLex, gradColbert (Float64Array each) }
#include <napi.h>

#include <string>
#include <vector>

#include "binding/js_values.h"
#include "binding/kernels_wrap.h"
#include "binding/promise_worker.h"
#include "train/m3_loss.h"

namespace m3js {
namespace {

double Option(const Napi::Object& o, const char* key, double fallback) {
  const Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

Napi::Value M3Loss(const Napi::CallbackInfo& info) {
  return GuardSync(info.Env(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const auto dense = CopyTypedArray<float>(info[0], napi_float32_array, "dense (Float32Array)");
    const auto lex = CopyTypedArray<float>(info[1], napi_float32_array, "lex (Float32Array)");
    const auto colbert = CopyTypedArray<float>(info[2], napi_float32_array, "colbert (Float32Array)");
    const auto target = CopyTypedArray<int32_t>(info[3], napi_int32_array, "target (Int32Array)");
    const int64_t queries = info[4].As<Napi::Number>().Int64Value();
    const int64_t passages = info[5].As<Napi::Number>().Int64Value();
    const uint64_t cells = static_cast<uint64_t>(queries) * static_cast<uint64_t>(passages);
    if (queries < 1 || passages < 1 || dense.size() != cells || lex.size() != cells || colbert.size() != cells ||
        target.size() != static_cast<uint64_t>(queries)) {
      throw MakeError(env, "ERR_INPUT", "m3Loss: each score matrix needs queries x passages values and target one per query");
    }
    m3::M3LossOptions o;
    if (info[6].IsObject()) {
      const Napi::Object opts = info[6].As<Napi::Object>();
      o.temperature = Option(opts, "temperature", o.temperature);
      o.w_dense = Option(opts, "wDense", o.w_dense);
      o.w_lex = Option(opts, "wLex", o.w_lex);
      o.w_colbert = Option(opts, "wColbert", o.w_colbert);
      o.t_dense = Option(opts, "tDense", o.t_dense);
      o.t_lex = Option(opts, "tLex", o.t_lex);
      o.t_colbert = Option(opts, "tColbert", o.t_colbert);
      const Napi::Value sd = opts.Get("selfDistill");
      if (sd.IsBoolean()) o.self_distill = sd.As<Napi::Boolean>().Value();
    }
    m3::M3LossResult r = m3::M3Loss(dense.data(), lex.data(), colbert.data(), target.data(), queries, passages, o);
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", r.loss);
    out.Set("l", r.l);
    out.Set("lDistill", r.l_distill);
    out.Set("dense", r.dense);
    out.Set("lex", r.lex);
    out.Set("colbert", r.colbert);
    out.Set("inter", r.inter);
    out.Set("distillDense", r.distill_dense);
    out.Set("distillLex", r.distill_lex);
    out.Set("distillColbert", r.distill_colbert);
    out.Set("gradDense", ToTypedArray(env, std::move(r.grad_dense)));
    out.Set("gradLex", ToTypedArray(env, std::move(r.grad_lex)));
    out.Set("gradColbert", ToTypedArray(env, std::move(r.grad_colbert)));
    return out;
  }, "m3Loss");
}

}  // namespace

void RegisterTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("m3Loss", Napi::Function::New(env, M3Loss, "m3Loss"));
}

}  // namespace m3js
