// Runs work on a thread the addon owns and settles a JS promise from it through a thread-safe
// function, so no libuv pool thread is held for the seconds an encode can take.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "binding/addon_data.h"
#include "binding/js_values.h"

namespace m3js {

/// The outcome of work done off the JS thread: either a builder for the JS result, run on the JS
/// thread, or an error code and message.
struct Outcome {
  std::function<Napi::Value(Napi::Env)> build;
  std::string error_code, error_message;
};

/// A promise plus the thread-safe function that settles it from any thread, exactly once.
/// While it is pending it counts as in-flight work of its environment (see InFlight).
class PendingPromise {
 public:
  /// Throws a JS error (ERR_RUNTIME) when the environment is shutting down.
  explicit PendingPromise(Napi::Env env);
  ~PendingPromise();
  Napi::Promise promise() const { return deferred_.Promise(); }

  /// Settles the promise on the JS thread. Safe from any thread; does nothing when the
  /// environment is shutting down (a terminated worker thread).
  void Settle(Outcome outcome);

  /// Keeps a JS value (e.g. a typed array read by the work) alive until the promise settles.
  /// Call on the JS thread, before the work starts.
  void Hold(Napi::Value value);

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ThreadSafeFunction tsfn_;
  std::shared_ptr<InFlight> in_flight_;
  bool settled_ = false;
  // Released on the JS thread when the promise settles; left alone if the environment is torn
  // down first (references must not be deleted from another thread).
  std::vector<napi_ref> held_;
};

/// Runs `work` on a new detached thread and settles the returned promise with its outcome.
/// For one-off slow work (model loading, batched scoring); encodes use a model's own JobQueue.
/// `keep` lists JS values the work reads (typed arrays): they stay alive until it settles.
Napi::Promise RunDetached(Napi::Env env, std::function<Outcome()> work, std::initializer_list<Napi::Value> keep = {});

/// Runs `work`, turning core and standard exceptions into an error outcome; `what` names the
/// operation in an out-of-memory message.
Outcome Guard(const std::function<Outcome()>& work, const char* what = "this call");

/// Starts `fn` on a detached thread; if the system cannot start one, settles `pending` with
/// ERR_RUNTIME instead of aborting the process.
void StartDetached(const std::shared_ptr<PendingPromise>& pending, std::function<void()> fn);

/// Runs a synchronous native call, turning core and standard exceptions (out of memory
/// included) into JS errors with a code, so nothing escapes as std::terminate.
Napi::Value GuardSync(Napi::Env env, const std::function<Napi::Value()>& call, const char* what);

}  // namespace m3js
