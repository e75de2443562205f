// JS class `Encoder` (the raw native model; lib/native.ts declares its exact shape).
//   [async] Encoder.load(dir, options)   -> Promise<Encoder>
//   [sync]  encoder.info()               -> { layout, dim, hidden, outputs, onnx, ... }
//   [async] encoder.encode(ids, offsets, order, batchEnds, flags, jobId) -> Promise<RawEncodeResult>
//   [sync]  encoder.cancel(jobId)        -> boolean (false when no such job is pending)
//   [async] encoder.close()              -> Promise<void>: rejects queued jobs, waits for running ones
#pragma once
#include <napi.h>

#include <atomic>
#include <map>
#include <mutex>
#include <memory>

#include "core/cancel_token.h"
#include "core/encoder.h"
#include "binding/promise_worker.h"
#include "core/job_queue.h"

namespace m3js {

/// State shared by a JS Encoder and its jobs. The encoder is destroyed only after the queue has
/// joined its workers, so jobs may hold a raw pointer to it.
struct ModelState {
  std::unique_ptr<m3::Encoder> encoder;
  std::unique_ptr<m3::JobQueue> queue;
  std::atomic<bool> closed{false};
  std::mutex shutdown_mu;
  std::mutex tokens_mu;
  struct Job {
    std::shared_ptr<m3::CancelToken> token;
    std::shared_ptr<PendingPromise> pending;
  };
  std::map<double, Job> tokens;  // pending jobs by JS job id

  /// Stops a job: terminates its run, or settles it at once if no worker has started it.
  /// Call with tokens_mu held; erases the entry when it settles it.
  void StopJob(std::map<double, Job>::iterator it, const char* code, const char* message);

  /// Cancels every pending job, joins the workers and frees the session. Blocks.
  void Shutdown();
};

class EncoderWrap : public Napi::ObjectWrap<EncoderWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit EncoderWrap(const Napi::CallbackInfo& info);
  ~EncoderWrap() override;

 private:
  static Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  /// [async] Shrinks ONNX Runtime's CPU arena and trims the C heap (m3::Encoder::ReleaseMemory).
  Napi::Value ReleaseMemory(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  std::shared_ptr<ModelState> state_;
};

}  // namespace m3js
