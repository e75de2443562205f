// Training functions of the raw native module (lib/train.ts validates their arguments).
//   [sync]  m3Loss(dense, lex, colbert, target, queries, passages, options)
//             -> { loss, l, lDistill, dense, lex, colbert, inter, distillDense, distillLex,
//                  distillColbert, gradDense, gradLex, gradColbert (Float64Array each) }
//   JS class `HeadTrainerNative` (lib/finetune.ts):
//   [sync]  new HeadTrainerNative(cachePath, hidden, ids: Int32Array, offsets: Uint32Array, dim,
//                                 params: Float32Array, threads)
//   [async] step(queries: Int32Array, passages: Int32Array, target: Int32Array, options)
//             -> { loss terms as m3Loss, gradNorm, grad: Float32Array (only when options.update is false) }
//   [sync]  state() -> { params, m, v: Float32Array, t } / setState(params, m, v, t)
//   [sync]  close(): releases the mapped cache and the buffers (a running step finishes first)
#include <napi.h>

#include <mutex>
#include <memory>
#include <string>
#include <vector>

#include "binding/js_values.h"
#include "binding/kernels_wrap.h"
#include "binding/promise_worker.h"
#include "base/error.h"
#include "train/head_trainer.h"
#include "train/m3_loss.h"

namespace m3js {
namespace {

double Option(const Napi::Object& o, const char* key, double fallback) {
  const Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

m3::M3LossOptions LossOptions(const Napi::Value& value) {
  m3::M3LossOptions o;
  if (!value.IsObject()) return o;
  const Napi::Object opts = value.As<Napi::Object>();
  o.temperature = Option(opts, "temperature", o.temperature);
  o.w_dense = Option(opts, "wDense", o.w_dense);
  o.w_lex = Option(opts, "wLex", o.w_lex);
  o.w_colbert = Option(opts, "wColbert", o.w_colbert);
  o.t_dense = Option(opts, "tDense", o.t_dense);
  o.t_lex = Option(opts, "tLex", o.t_lex);
  o.t_colbert = Option(opts, "tColbert", o.t_colbert);
  const Napi::Value sd = opts.Get("selfDistill");
  if (sd.IsBoolean()) o.self_distill = sd.As<Napi::Boolean>().Value();
  return o;
}

/// The loss terms of m3Loss's result (without the score gradients).
void SetLossTerms(Napi::Object out, const m3::M3LossResult& r) {
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
    const m3::M3LossOptions o = LossOptions(info[6]);
    m3::M3LossResult r = m3::M3Loss(dense.data(), lex.data(), colbert.data(), target.data(), queries, passages, o);
    Napi::Object out = Napi::Object::New(env);
    SetLossTerms(out, r);
    out.Set("gradDense", ToTypedArray(env, std::move(r.grad_dense)));
    out.Set("gradLex", ToTypedArray(env, std::move(r.grad_lex)));
    out.Set("gradColbert", ToTypedArray(env, std::move(r.grad_colbert)));
    return out;
  }, "m3Loss");
}

bool Flag(const Napi::Object& o, const char* key, bool fallback) {
  const Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

class HeadTrainerWrap : public Napi::ObjectWrap<HeadTrainerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "HeadTrainerNative",
                       {InstanceMethod<&HeadTrainerWrap::Step>("step"), InstanceMethod<&HeadTrainerWrap::State>("state"),
                        InstanceMethod<&HeadTrainerWrap::SetState>("setState"), InstanceMethod<&HeadTrainerWrap::Close>("close")});
  }

  explicit HeadTrainerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<HeadTrainerWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 7 || !info[0].IsString() || !info[1].IsNumber() || !info[4].IsNumber() || !info[6].IsNumber())
      throw MakeError(env, "ERR_INPUT", "HeadTrainerNative(cachePath, hidden, ids, offsets, dim, params, threads)");
    const std::string path = info[0].As<Napi::String>().Utf8Value();
    const int64_t hidden = info[1].As<Napi::Number>().Int64Value();
    auto ids = CopyTypedArray<int32_t>(info[2], napi_int32_array, "ids (Int32Array)");
    auto offsets = CopyTypedArray<uint32_t>(info[3], napi_uint32_array, "offsets (Uint32Array)");
    const int64_t dim = info[4].As<Napi::Number>().Int64Value();
    auto params = CopyTypedArray<float>(info[5], napi_float32_array, "params (Float32Array)");
    const int threads = static_cast<int>(info[6].As<Napi::Number>().Int32Value());
    GuardSync(env, [&]() -> Napi::Value {
      std::shared_ptr<const m3::HiddenStateCache> cache = m3::HiddenStateCache::Open(path, hidden, std::move(ids), std::move(offsets));
      trainer_ = std::make_shared<m3::HeadTrainer>(cache, dim, std::move(params), threads);
      return env.Undefined();
    }, "HeadTrainerNative");
  }

 private:
  /// The trainer, locked against a running step (the step's thread holds the lock while it runs,
  /// so nothing can be left locked by a step that never started).
  std::shared_ptr<m3::HeadTrainer> Idle(Napi::Env env, std::unique_lock<std::mutex>* lock) const {
    if (!trainer_) throw MakeError(env, "ERR_DISPOSED", "this trainer has been closed");
    *lock = std::unique_lock<std::mutex>(*mu_, std::try_to_lock);
    if (!lock->owns_lock()) throw MakeError(env, "ERR_INPUT", "a training step is running on this trainer; await it first");
    return trainer_;
  }

  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!trainer_) throw MakeError(env, "ERR_DISPOSED", "this trainer has been closed");
    auto queries = CopyTypedArray<int32_t>(info[0], napi_int32_array, "queries (Int32Array)");
    auto passages = CopyTypedArray<int32_t>(info[1], napi_int32_array, "passages (Int32Array)");
    auto target = CopyTypedArray<int32_t>(info[2], napi_int32_array, "target (Int32Array)");
    m3::StepOptions o;
    o.loss = LossOptions(info[3]);
    if (info[3].IsObject()) {
      const Napi::Object opts = info[3].As<Napi::Object>();
      o.train_sparse = Flag(opts, "trainSparse", o.train_sparse);
      o.train_colbert = Flag(opts, "trainColbert", o.train_colbert);
      o.update = Flag(opts, "update", o.update);
      o.lr = Option(opts, "lr", o.lr);
      o.beta1 = Option(opts, "beta1", o.beta1);
      o.beta2 = Option(opts, "beta2", o.beta2);
      o.eps = Option(opts, "eps", o.eps);
      o.weight_decay = Option(opts, "weightDecay", o.weight_decay);
    }
    auto trainer = trainer_;
    auto mu = mu_;
    return RunDetached(env, [=]() -> Outcome {
      return Guard([&]() -> Outcome {
        std::unique_lock<std::mutex> lock(*mu, std::try_to_lock);
        if (!lock.owns_lock()) throw m3::CoreError("ERR_INPUT", "a training step is running on this trainer; await it first");
        auto r = std::make_shared<m3::StepResult>(trainer->Step(queries, passages, target, o));
        const bool with_grad = !o.update;
        return Outcome{[r, with_grad](Napi::Env env) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          SetLossTerms(out, r->loss);
          out.Set("gradNorm", r->grad_norm);
          if (with_grad) out.Set("grad", ToTypedArray(env, std::move(r->grad)));
          return out;
        }, "", ""};
      }, "a training step");
    }, {info.This()});
  }

  Napi::Value State(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::unique_lock<std::mutex> lock;
    auto trainer = Idle(env, &lock);
    Napi::Object out = Napi::Object::New(env);
    out.Set("params", ToTypedArray(env, std::vector<float>(trainer->params())));
    out.Set("m", ToTypedArray(env, std::vector<float>(trainer->adam_m())));
    out.Set("v", ToTypedArray(env, std::vector<float>(trainer->adam_v())));
    out.Set("t", static_cast<double>(trainer->adam_steps()));
    return out;
  }

  Napi::Value SetState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::unique_lock<std::mutex> lock;
    auto trainer = Idle(env, &lock);
    auto params = CopyTypedArray<float>(info[0], napi_float32_array, "params (Float32Array)");
    auto m = CopyTypedArray<float>(info[1], napi_float32_array, "m (Float32Array)");
    auto v = CopyTypedArray<float>(info[2], napi_float32_array, "v (Float32Array)");
    const int64_t t = info[3].IsNumber() ? info[3].As<Napi::Number>().Int64Value() : -1;
    return GuardSync(env, [&]() -> Napi::Value {
      trainer->SetState(std::move(params), std::move(m), std::move(v), t);
      return env.Undefined();
    }, "setState");
  }

  /// Drops this object's reference; a step in flight keeps its own until it settles.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    trainer_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<m3::HeadTrainer> trainer_;
  std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();
};

}  // namespace

void RegisterTrain(Napi::Env env, Napi::Object exports) {
  exports.Set("m3Loss", Napi::Function::New(env, M3Loss, "m3Loss"));
  exports.Set("HeadTrainerNative", HeadTrainerWrap::Define(env));
}

}  // namespace m3js
