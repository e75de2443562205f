// Per-environment state of the addon (one per main thread or worker thread).
#pragma once
#include <napi.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>

namespace m3js {

struct ModelState;

/// Work running on threads the addon started for one environment. The environment's cleanup
/// hook marks it dead and waits for the count to reach zero, so no thread touches a thread-safe
/// function, a typed array or a model after its environment is gone (a terminated worker).
class InFlight {
 public:
  /// Registers a thread's work; returns false when the environment is already shutting down.
  bool Enter() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!alive_) return false;
    ++count_;
    return true;
  }
  void Leave() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--count_ == 0) cv_.notify_all();
  }
  /// Runs `fn` (a call into the environment, e.g. a thread-safe function) only while it is
  /// alive, holding the lock so the environment cannot start shutting down meanwhile.
  template <typename F>
  void IfAlive(F&& fn) {
    std::lock_guard<std::mutex> lock(mu_);
    if (alive_) fn();
  }
  /// Called by the cleanup hook: refuses new work and waits for the running work to finish.
  void ShutDownAndWait() {
    std::unique_lock<std::mutex> lock(mu_);
    alive_ = false;
    cv_.wait(lock, [this] { return count_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
  bool alive_ = true;
};

struct AddonData {
  Napi::FunctionReference encoder_constructor;
  std::set<std::shared_ptr<ModelState>> live_models;  // not yet disposed; shut down when the environment exits
  std::shared_ptr<InFlight> in_flight = std::make_shared<InFlight>();
};

/// The in-flight tracker of an environment.
std::shared_ptr<InFlight> InFlightOf(Napi::Env env);

}  // namespace m3js
