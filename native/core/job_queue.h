// Threads owned by a model that run its encode jobs, so inference never occupies the JS thread
// or libuv's small thread pool.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace m3 {

class JobQueue {
 public:
  /// Starts `workers` threads (at least one).
  explicit JobQueue(int workers);
  /// Closes the queue (see Close).
  ~JobQueue();
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  /// Queues a job; returns false (and does not run it) once the queue is closed.
  bool Push(std::function<void()> job);

  /// Refuses new jobs, lets the workers finish every job already queued, and joins them.
  /// Idempotent; must not be called from a worker.
  void Close();

  int workers() const { return static_cast<int>(threads_.size()); }

 private:
  void Work();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool closed_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace m3
