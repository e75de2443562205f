#include "binding/encoder_wrap.h"

#include <system_error>
#include <thread>

#include "binding/addon_data.h"
#include "binding/js_values.h"
#include "binding/promise_worker.h"
#include "base/error.h"

namespace m3js {
namespace {

m3::LoadSettings ReadLoadSettings(const Napi::Object& o) {
  m3::LoadSettings s;
  auto num = [&](const char* key, double fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
  };
  auto str = [&](const char* key, const std::string& fallback) {
    Napi::Value v = o.Get(key);
    return v.IsString() ? v.As<Napi::String>().Utf8Value() : fallback;
  };
  s.session.intra_op_threads = static_cast<int>(num("threads", 0));
  s.session.inter_op_threads = static_cast<int>(num("interOpThreads", 1));
  const std::string optimization = str("graphOptimization", "all");
  if (!m3::ParseGraphOptimization(optimization, &s.session.graph_optimization))
    throw MakeError(o.Env(), "ERR_INPUT", "graphOptimization must be 'disabled', 'basic', 'extended' or 'all', got '" + optimization + "'.");
  s.session.memory_arena = !o.Get("memoryArena").IsBoolean() || o.Get("memoryArena").As<Napi::Boolean>().Value();
  s.session.allow_spinning = o.Get("allowSpinning").IsBoolean() && o.Get("allowSpinning").As<Napi::Boolean>().Value();
  try {
    s.session.provider.provider = &m3::FindProvider(str("device", "cpu"));
  } catch (const m3::CoreError& e) {
    throw MakeError(o.Env(), e.code(), e.what());
  }
  s.session.provider.device_id = static_cast<int>(num("deviceId", 0));
  s.session.provider.memory_limit = static_cast<int64_t>(num("gpuMemLimit", 0));
  s.session.provider.allow_tf32 = o.Get("allowTf32").IsBoolean() && o.Get("allowTf32").As<Napi::Boolean>().Value();
  s.session.fused_attention = !o.Get("fusedAttention").IsBoolean() || o.Get("fusedAttention").As<Napi::Boolean>().Value();
  const std::string precision = str("precision", "fp32");
  if (!m3::ParsePrecision(precision, &s.session.precision))
    throw MakeError(o.Env(), "ERR_INPUT", "precision must be 'fp32', 'bf16' or 'fp16', got '" + precision + "'.");
  s.onnx_file = str("onnxFile", "");
  s.session.optimized_graph_path = str("optimizedGraphPath", "");
  s.vocab_size = static_cast<int64_t>(num("vocabSize", 0));
  return s;
}

/// The output kinds JavaScript names, as the encoder's set (core/outputs.h holds the names).
m3::OutputSet ReadOutputs(Napi::Env env, const Napi::Array& names) {
  m3::OutputSet set;
  for (uint32_t i = 0; i < names.Length(); ++i) {
    const Napi::Value v = names.Get(i);
    m3::OutputKind kind;
    if (!v.IsString() || !m3::FindOutputKind(v.As<Napi::String>().Utf8Value(), &kind)) {
      std::string known;
      for (const auto& k : m3::kOutputKinds) known += (known.empty() ? "'" : ", '") + std::string(k.name) + "'";
      throw MakeError(env, "ERR_INPUT", "encode: outputs must name output kinds (" + known + ")");
    }
    set.add(kind);
  }
  return set;
}

void ModelStateRegistry(Napi::Env env, const std::shared_ptr<ModelState>& state, bool add) {
  AddonData* data = env.GetInstanceData<AddonData>();
  if (!data) return;
  if (add) data->live_models.insert(state);
  else data->live_models.erase(state);
}

}  // namespace

void ModelState::StopJob(std::map<double, Job>::iterator it, const char* code, const char* message) {
  it->second.token->Cancel();
  if (it->second.token->Claim()) {
    it->second.pending->Settle(Outcome{nullptr, code, message});
    tokens.erase(it);
  }
}

void ModelState::Shutdown() {
  std::lock_guard<std::mutex> shutdown_lock(shutdown_mu);
  closed = true;
  {
    std::lock_guard<std::mutex> lock(tokens_mu);
    for (auto it = tokens.begin(); it != tokens.end();) StopJob(it++, "ERR_DISPOSED", "The model was disposed before this encode ran.");
  }
  if (queue) queue->Close();
  queue.reset();
  encoder.reset();
}

Napi::Function EncoderWrap::Define(Napi::Env env) {
  return DefineClass(env, "Encoder",
                     {StaticMethod<&EncoderWrap::Load>("load"), InstanceMethod<&EncoderWrap::Info>("info"),
                      InstanceMethod<&EncoderWrap::Encode>("encode"), InstanceMethod<&EncoderWrap::Cancel>("cancel"),
                      InstanceMethod<&EncoderWrap::ReleaseMemory>("releaseMemory"),
                      InstanceMethod<&EncoderWrap::Close>("close")});
}

EncoderWrap::EncoderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EncoderWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw MakeError(info.Env(), "ERR_INPUT", "Encoder cannot be constructed directly; use BGEM3.load(dir).");
  }
  auto* loaded = info[0].As<Napi::External<std::shared_ptr<ModelState>>>().Data();
  state_ = *loaded;
  ModelStateRegistry(info.Env(), state_, true);
}

EncoderWrap::~EncoderWrap() {
  // Garbage-collected without dispose(): free the session off the JS thread, since a job may
  // still be running and joining it here would block the event loop. The thread counts as the
  // environment's in-flight work, so a terminating worker waits for it.
  if (!state_) return;
  ModelStateRegistry(Env(), state_, false);
  std::shared_ptr<ModelState> state = std::move(state_);
  std::shared_ptr<InFlight> in_flight = InFlightOf(Env());
  if (!in_flight->Enter()) {
    state->Shutdown();
    return;
  }
  try {
    std::thread([state, in_flight] {
      state->Shutdown();
      in_flight->Leave();
    }).detach();
  } catch (const std::system_error&) {
    state->Shutdown();
    in_flight->Leave();
  }
}

Napi::Value EncoderWrap::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
    throw MakeError(env, "ERR_INPUT", "Encoder.load(dir: string, options: object)");
  }
  const std::string dir = info[0].As<Napi::String>().Utf8Value();
  const Napi::Object options = info[1].As<Napi::Object>();
  const m3::LoadSettings settings = ReadLoadSettings(options);
  const int workers = std::max(1, static_cast<int>(options.Get("concurrency").IsNumber()
                                                       ? options.Get("concurrency").As<Napi::Number>().Int32Value()
                                                       : 1));
  return RunDetached(env, [dir, settings, workers]() -> Outcome {
    return Guard([&]() -> Outcome {
      auto state = std::make_shared<ModelState>();
      state->encoder = m3::Encoder::Load(dir, settings);
      state->queue = std::make_unique<m3::JobQueue>(workers);
      return Outcome{[state](Napi::Env env) -> Napi::Value {
        AddonData* data = env.GetInstanceData<AddonData>();
        auto external = Napi::External<std::shared_ptr<ModelState>>::New(
            env, new std::shared_ptr<ModelState>(state), [](Napi::Env, std::shared_ptr<ModelState>* p) { delete p; });
        return data->encoder_constructor.New({external});
      }, "", ""};
    }, "loading the model");
  });
}

Napi::Value EncoderWrap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!state_ || !state_->encoder || state_->closed) throw MakeError(env, "ERR_DISPOSED", "This model has been disposed.");
  const m3::Encoder& e = *state_->encoder;
  Napi::Object o = Napi::Object::New(env);
  o.Set("layout", e.kind() == m3::GraphKind::kHiddenState ? "bge-m3-snapshot" : "heads-baked");
  o.Set("dim", Napi::Number::New(env, static_cast<double>(e.dim())));
  o.Set("hidden", Napi::Number::New(env, static_cast<double>(e.hidden())));
  o.Set("onnx", e.files().onnx);
  o.Set("colbertHead", e.files().colbert_head);
  o.Set("sparseHead", e.files().sparse_head);
  o.Set("hasDense", e.has_dense());
  o.Set("hasSparse", e.has_sparse());
  o.Set("hasColbert", e.has_colbert());
  Napi::Array outputs = Napi::Array::New(env);
  for (const auto& name : e.session().output_names()) outputs.Set(outputs.Length(), name);
  o.Set("graphOutputs", outputs);
  o.Set("workers", Napi::Number::New(env, state_->queue ? state_->queue->workers() : 0));
  o.Set("headsDevice", e.heads_device());
  o.Set("headsDeviceWhy", e.gpu_heads_why());
  o.Set("fusedAttentionBlocks", Napi::Number::New(env, e.session().fused_attention_blocks()));
  o.Set("attentionNote", e.session().attention_note());
  o.Set("precision", e.session().precision_name());
  if (e.session().fp16().tensors > 0) {
    const auto& f = e.session().fp16();
    Napi::Object fp16 = Napi::Object::New(env);
    fp16.Set("tensors", Napi::Number::New(env, static_cast<double>(f.tensors)));
    fp16.Set("clamped", Napi::Number::New(env, static_cast<double>(f.clamped)));
    fp16.Set("layerNorms", Napi::Number::New(env, f.layer_norms));
    fp16.Set("fp32Nodes", Napi::Number::New(env, f.fp32_nodes));
    fp16.Set("casts", Napi::Number::New(env, f.casts));
    o.Set("fp16", fp16);
  }
  o.Set("bf16Layers", Napi::Number::New(env, e.session().bf16_layers()));
  o.Set("precisionNote", e.session().precision_note());
  return o;
}

Napi::Value EncoderWrap::Encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[4].IsArray() || !info[5].IsNumber()) {
    throw MakeError(env, "ERR_INPUT", "encode(ids, offsets, order, batchEnds, outputs: string[], jobId)");
  }
  auto request = std::make_shared<m3::EncodeRequest>();
  request->ids = CopyTypedArray<int32_t>(info[0], napi_int32_array, "ids (Int32Array)");
  request->offsets = CopyTypedArray<uint32_t>(info[1], napi_uint32_array, "offsets (Uint32Array)");
  request->order = CopyTypedArray<uint32_t>(info[2], napi_uint32_array, "order (Uint32Array)");
  request->batch_ends = CopyTypedArray<uint32_t>(info[3], napi_uint32_array, "batchEnds (Uint32Array)");
  request->outputs = ReadOutputs(env, info[4].As<Napi::Array>());
  const double job_id = info[5].As<Napi::Number>().DoubleValue();
  if (!(job_id >= 0) || job_id != static_cast<double>(static_cast<int64_t>(job_id)))
    throw MakeError(env, "ERR_INPUT", "encode: jobId must be a non-negative integer");

  auto pending = std::make_shared<PendingPromise>(env);
  pending->Hold(info.This());  // the model object stays alive while its encode runs
  Napi::Promise promise = pending->promise();
  std::shared_ptr<ModelState> state = state_;
  if (!state || state->closed || !state->queue) {
    pending->Settle(Outcome{nullptr, "ERR_DISPOSED", "This model has been disposed; load it again."});
    return promise;
  }
  auto token = std::make_shared<m3::CancelToken>();
  {
    std::lock_guard<std::mutex> lock(state->tokens_mu);
    if (!state->tokens.emplace(job_id, ModelState::Job{token, pending}).second) {
      pending->Settle(Outcome{nullptr, "ERR_INPUT", "encode: jobId " + std::to_string(static_cast<int64_t>(job_id)) + " is already in use"});
      return promise;
    }
  }
  m3::Encoder* encoder = state->encoder.get();
  ModelState* raw_state = state.get();
  auto job = [raw_state, encoder, request, token, pending, job_id] {
    if (!token->Claim()) return;  // settled already by cancel() or dispose()
    Outcome outcome = Guard([&]() -> Outcome {
      if (token->cancelled()) {
        if (raw_state->closed) throw m3::CoreError("ERR_DISPOSED", "The model was disposed before this encode ran.");
        throw m3::CoreError("ERR_ABORTED", "encode was aborted.");
      }
      auto result = std::make_shared<m3::EncodeResult>(encoder->Encode(*request, token.get()));
      return Outcome{[result](Napi::Env env) -> Napi::Value {
        Napi::Object o = Napi::Object::New(env);
        o.Set("count", Napi::Number::New(env, static_cast<double>(result->count)));
        o.Set("dim", Napi::Number::New(env, static_cast<double>(result->dim)));
        o.Set("dense", ToTypedArray(env, std::move(result->dense)));
        o.Set("sparseOffsets", ToTypedArray(env, std::move(result->sparse_offsets)));
        o.Set("sparseIds", ToTypedArray(env, std::move(result->sparse_ids)));
        o.Set("sparseWeights", ToTypedArray(env, std::move(result->sparse_weights)));
        o.Set("colbertOffsets", ToTypedArray(env, std::move(result->colbert_offsets)));
        o.Set("colbert", ToTypedArray(env, std::move(result->colbert)));
        o.Set("hidden", ToTypedArray(env, std::move(result->hidden)));
        Napi::Object stats = Napi::Object::New(env);
        stats.Set("sessionMs", result->session_ms);
        stats.Set("headsMs", result->heads_ms);
        stats.Set("paddedTokens", static_cast<double>(result->padded_tokens));
        stats.Set("batches", static_cast<double>(result->batches));
        o.Set("stats", stats);
        return o;
      }, "", ""};
    }, "encode (use a smaller batchSize or maxBatchTokens)");
    if (outcome.error_code == "ERR_ABORTED" && raw_state->closed) {
      outcome.error_code = "ERR_DISPOSED";
      outcome.error_message = "The model was disposed while this encode was running.";
    }
    {
      std::lock_guard<std::mutex> lock(raw_state->tokens_mu);
      raw_state->tokens.erase(job_id);
    }
    pending->Settle(std::move(outcome));
  };
  if (!state->queue->Push(std::move(job))) {
    std::lock_guard<std::mutex> lock(state->tokens_mu);
    state->tokens.erase(job_id);
    pending->Settle(Outcome{nullptr, "ERR_DISPOSED", "This model has been disposed; load it again."});
  }
  return promise;
}

Napi::Value EncoderWrap::ReleaseMemory(const Napi::CallbackInfo& info) {
  auto pending = std::make_shared<PendingPromise>(info.Env());
  pending->Hold(info.This());
  Napi::Promise promise = pending->promise();
  auto done = [] { return Outcome{[](Napi::Env env) { return env.Undefined(); }, "", ""}; };
  std::shared_ptr<ModelState> state = state_;
  if (!state || state->closed || !state->queue) {
    pending->Settle(done());  // a disposed model holds nothing to release
    return promise;
  }
  m3::Encoder* encoder = state->encoder.get();
  ModelState* raw_state = state.get();
  // On the encode queue, so it never runs after the encoder is gone (the queue drains first).
  auto job = [raw_state, encoder, pending, done] {
    pending->Settle(Guard([&]() -> Outcome {
      if (!raw_state->closed) encoder->ReleaseMemory();
      return done();
    }, "releasing memory"));
  };
  if (!state->queue->Push(std::move(job))) pending->Settle(done());
  return promise;
}

Napi::Value EncoderWrap::Cancel(const Napi::CallbackInfo& info) {
  if (!state_ || info.Length() < 1 || !info[0].IsNumber()) return Napi::Boolean::New(info.Env(), false);
  std::lock_guard<std::mutex> lock(state_->tokens_mu);
  auto it = state_->tokens.find(info[0].As<Napi::Number>().DoubleValue());
  if (it == state_->tokens.end()) return Napi::Boolean::New(info.Env(), false);
  state_->StopJob(it, "ERR_ABORTED", "encode was aborted.");
  return Napi::Boolean::New(info.Env(), true);
}

Napi::Value EncoderWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<ModelState> state = state_;
  if (!state) return RunDetached(env, [] { return Outcome{[](Napi::Env env) { return env.Undefined(); }, "", ""}; });
  ModelStateRegistry(env, state, false);
  state->closed = true;
  {
    // Queued jobs reject with ERR_DISPOSED at once; the run in progress stops and does too.
    std::lock_guard<std::mutex> lock(state->tokens_mu);
    for (auto it = state->tokens.begin(); it != state->tokens.end();) state->StopJob(it++, "ERR_DISPOSED", "The model was disposed before this encode ran.");
  }
  return RunDetached(env, [state] {
    state->Shutdown();
    return Outcome{[](Napi::Env env) { return env.Undefined(); }, "", ""};
  });
}

}  // namespace m3js
