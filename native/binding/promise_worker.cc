#include "binding/promise_worker.h"

#include <system_error>
#include <thread>

#include "base/error.h"

namespace m3js {

std::shared_ptr<InFlight> InFlightOf(Napi::Env env) {
  AddonData* data = env.GetInstanceData<AddonData>();
  return data ? data->in_flight : std::make_shared<InFlight>();
}

PendingPromise::PendingPromise(Napi::Env env)
    : deferred_(Napi::Promise::Deferred::New(env)), in_flight_(InFlightOf(env)) {
  if (!in_flight_->Enter()) throw MakeError(env, "ERR_RUNTIME", "The environment is shutting down.");
  tsfn_ = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                        "bge-m3", 0, 1);
}

PendingPromise::~PendingPromise() {
  // A promise dropped without settling (an exception before its work started) still leaves.
  if (!settled_) in_flight_->Leave();
}

void PendingPromise::Hold(Napi::Value value) {
  napi_ref ref = nullptr;
  if (napi_create_reference(value.Env(), value, 1, &ref) == napi_ok) held_.push_back(ref);
}

void PendingPromise::Settle(Outcome outcome) {
  if (settled_) return;
  settled_ = true;
  auto shared = std::make_shared<Outcome>(std::move(outcome));
  Napi::Promise::Deferred deferred = deferred_;
  std::vector<napi_ref> held = std::move(held_);
  held_.clear();
  in_flight_->IfAlive([&] {
    tsfn_.BlockingCall([deferred, shared, held](Napi::Env env, Napi::Function) {
      // A C++ exception must not leave this callback (Node would abort): while an environment
      // terminates, every N-API call here can fail, and then there is nobody left to tell.
      try {
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
      } catch (const Napi::Error&) {
      }
    });
    tsfn_.Release();
  });
  in_flight_->Leave();
}

Outcome Guard(const std::function<Outcome()>& work, const char* what) {
  try {
    return work();
  } catch (const m3::CoreError& e) {
    return Outcome{nullptr, e.code(), e.what()};
  } catch (const std::bad_alloc&) {
    return Outcome{nullptr, "ERR_RUNTIME", std::string("Out of memory in ") + what + "; pass less data per call."};
  } catch (const std::exception& e) {
    return Outcome{nullptr, "ERR_RUNTIME", e.what()};
  }
}

void StartDetached(const std::shared_ptr<PendingPromise>& pending, std::function<void()> fn) {
  try {
    std::thread(std::move(fn)).detach();
  } catch (const std::system_error& e) {
    pending->Settle(Outcome{nullptr, "ERR_RUNTIME", std::string("Could not start a thread: ") + e.what()});
  }
}

Napi::Value GuardSync(Napi::Env env, const std::function<Napi::Value()>& call, const char* what) {
  try {
    return call();
  } catch (const Napi::Error&) {
    throw;
  } catch (const m3::CoreError& e) {
    throw MakeError(env, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    throw MakeError(env, "ERR_RUNTIME", std::string("Out of memory in ") + what + "; pass less data per call.");
  } catch (const std::exception& e) {
    throw MakeError(env, "ERR_RUNTIME", std::string(what) + ": " + e.what());
  }
}

Napi::Promise RunDetached(Napi::Env env, std::function<Outcome()> work, std::initializer_list<Napi::Value> keep) {
  auto pending = std::make_shared<PendingPromise>(env);
  for (const Napi::Value& value : keep) pending->Hold(value);
  Napi::Promise promise = pending->promise();
  StartDetached(pending, [pending, work = std::move(work)] { pending->Settle(Guard(work)); });
  return promise;
}

}  // namespace m3js
