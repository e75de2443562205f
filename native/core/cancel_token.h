// Cancellation of one encode request: a flag checked between batches, plus the ONNX Runtime
// run-options terminate switch for the batch in flight.
#pragma once
#include <atomic>
#include <mutex>

#include <onnxruntime_cxx_api.h>

namespace m3 {

class CancelToken {
 public:
  /// Marks the request cancelled and stops the ORT run in progress, if any. Thread-safe.
  void Cancel() {
    cancelled_.store(true);
    std::lock_guard<std::mutex> lock(mu_);
    if (active_) active_->SetTerminate();
  }
  bool cancelled() const { return cancelled_.load(); }

  /// Claims the right to finish the request: the worker about to run it, or a canceller
  /// settling it before it runs. Exactly one caller gets true.
  bool Claim() { return !claimed_.exchange(true); }

  /// Registers the run options of the batch about to run (terminating it at once if the
  /// request was already cancelled); Detach before the options are destroyed.
  void Attach(Ort::RunOptions* options) {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = options;
    if (cancelled_.load()) active_->SetTerminate();
  }
  void Detach() {
    std::lock_guard<std::mutex> lock(mu_);
    active_ = nullptr;
  }

 private:
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> claimed_{false};
  std::mutex mu_;
  Ort::RunOptions* active_ = nullptr;
};

}  // namespace m3
