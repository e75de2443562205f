// Runs work on a thread the addon owns and settles a JS promise from it through a thread-safe
// function, so no libuv pool thread is held for the seconds an encode can take.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>

#include "binding/js_values.h"

namespace m3js {

/// The outcome of work done off the JS thread: either a builder for the JS result, run on the JS
/// thread, or an error code and message.
struct Outcome {
  std::function<Napi::Value(Napi::Env)> build;
  std::string error_code, error_message;
};

/// A promise plus the thread-safe function that settles it from any thread, exactly once.
class PendingPromise {
 public:
  explicit PendingPromise(Napi::Env env);
  Napi::Promise promise() const { return deferred_.Promise(); }

  /// Settles the promise on the JS thread. Safe from any thread; does nothing when the
  /// environment is shutting down (a terminated worker thread).
  void Settle(Outcome outcome);

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ThreadSafeFunction tsfn_;
};

/// Runs `work` on a new detached thread and settles the returned promise with its outcome.
/// For one-off slow work (model loading); encodes use a model's own JobQueue.
Napi::Promise RunDetached(Napi::Env env, std::function<Outcome()> work);

/// Runs `work`, turning core and standard exceptions into an error outcome.
Outcome Guard(const std::function<Outcome()>& work);

}  // namespace m3js
