// A parallel loop for the native heads, which run after ONNX Runtime has returned and so would
// otherwise leave all but one of its intra-op threads' cores idle.
#pragma once
#include <cstdint>
#include <functional>

namespace m3 {

/// Calls fn(index, worker) for index in [0, count) on up to `threads` threads (the caller is
/// worker 0), handing out indices dynamically. Each worker id is used by one thread at a time,
/// so per-worker scratch needs no locking. The first exception thrown is rethrown after all
/// workers stop. Threads are started per call: callers use it only for work of a millisecond
/// or more, where that cost (tens of microseconds) does not show.
void ParallelFor(int64_t count, int threads, const std::function<void(int64_t index, int worker)>& fn);

}  // namespace m3
