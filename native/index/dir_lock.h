// An exclusive, crash-safe lock on a file (flock): the kernel releases it when its holder's
// process ends, however it ends, so a killed writer never leaves a lock for others to steal.
#pragma once
#include <string>

namespace m3 {

/// Takes the exclusive lock on `path` (created if missing) without waiting: the open, locked
/// file descriptor, with the caller's process id written into the file for diagnostics; or -1
/// when another process (or another descriptor of this one) holds it. A file that was removed or
/// replaced while it was being locked is locked afresh, so the lock always belongs to the file
/// at `path`. Throws CoreError(ERR_RUNTIME) when the file cannot be opened or locked.
int TryLockFile(const std::string& path);

/// Releases a lock taken by TryLockFile; with `remove`, deletes the file first (still holding
/// the lock, so a waiter that then gets the deleted file's lock sees it replaced and retries).
void UnlockFile(int fd, const std::string& path, bool remove);

}  // namespace m3
