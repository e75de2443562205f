#include "core/job_queue.h"

#include <algorithm>
#include <string>
#include <system_error>

#include "base/error.h"

namespace m3 {

JobQueue::JobQueue(int workers) {
  try {
    for (int i = 0; i < std::max(1, workers); ++i) threads_.emplace_back([this] { Work(); });
  } catch (const std::system_error& e) {
    // Fewer threads than asked still work; none does not.
    if (threads_.empty()) throw CoreError("ERR_RUNTIME", std::string("Could not start an encode thread: ") + e.what());
  }
}

JobQueue::~JobQueue() { Close(); }

bool JobQueue::Push(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

void JobQueue::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void JobQueue::Work() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return closed_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // closed and drained
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

}  // namespace m3
