#include "binding/promise_worker.h"

#include <thread>

#include "core/core_error.h"

namespace m3js {

PendingPromise::PendingPromise(Napi::Env env) : deferred_(Napi::Promise::Deferred::New(env)) {
  tsfn_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                        "bge-m3", 0, 1);
}

void PendingPromise::Hold(Napi::Value value) {
  napi_ref ref = nullptr;
  if (napi_create_reference(value.Env(), value, 1, &ref) == napi_ok) held_.push_back(ref);
}

void PendingPromise::Settle(Outcome outcome) {
  auto shared = std::make_shared<Outcome>(std::move(outcome));
  Napi::Promise::Deferred deferred = deferred_;
  std::vector<napi_ref> held = std::move(held_);
  held_.clear();
  tsfn_.BlockingCall([deferred, shared, held](Napi::Env env, Napi::Function) {
    Napi::HandleScope scope(env);
    for (napi_ref ref : held) napi_delete_reference(env, ref);
    if (!shared->error_code.empty()) {
      deferred.Reject(MakeError(env, shared->error_code, shared->error_message).Value());
      return;
    }
    try {
      deferred.Resolve(shared->build(env));
    } catch (const Napi::Error& e) {
      deferred.Reject(e.Value());
    }
  });
  tsfn_.Release();
}

Outcome Guard(const std::function<Outcome()>& work) {
  try {
    return work();
  } catch (const m3::CoreError& e) {
    return Outcome{nullptr, e.code(), e.what()};
  } catch (const std::bad_alloc&) {
    return Outcome{nullptr, "ERR_RUNTIME", "Out of memory; encode fewer or shorter texts per call (batchSize, maxBatchTokens)."};
  } catch (const std::exception& e) {
    return Outcome{nullptr, "ERR_RUNTIME", e.what()};
  }
}

Napi::Promise RunDetached(Napi::Env env, std::function<Outcome()> work, std::initializer_list<Napi::Value> keep) {
  auto pending = std::make_shared<PendingPromise>(env);
  for (const Napi::Value& value : keep) pending->Hold(value);
  Napi::Promise promise = pending->promise();
  std::thread([pending, work = std::move(work)] { pending->Settle(Guard(work)); }).detach();
  return promise;
}

}  // namespace m3js
