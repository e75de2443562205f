#include "index/dir_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "base/error.h"

namespace m3 {

namespace {

[[noreturn]] void Fail(const std::string& what, const std::string& path, int err) {
  throw CoreError("ERR_RUNTIME", "cannot " + what + " the lock file '" + path + "': " + std::strerror(err));
}

}  // namespace

int TryLockFile(const std::string& path) {
  for (;;) {
    // No link is followed (a LOCK linked to another file would have that file truncated), no
    // FIFO or device open blocks, and whatever was opened must be a regular file.
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    if (fd < 0) {
      const int err = errno;
      if (err == ELOOP) throw CoreError("ERR_MODEL_FILES", "the lock file '" + path + "' is a symbolic link; remove it (the index creates its own)");
      Fail("open", path, err);
    }
    struct stat opened {};
    if (fstat(fd, &opened) != 0 || !S_ISREG(opened.st_mode)) {
      close(fd);
      throw CoreError("ERR_MODEL_FILES", "the lock file '" + path + "' is not a regular file; remove it (the index creates its own)");
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      close(fd);
      if (err == EWOULDBLOCK || err == EINTR) return -1;
      Fail("lock", path, err);
    }
    // The holder before us may have removed the file while we waited to lock it: then we hold
    // the lock of a file nobody else can see, and must lock the one now at `path`.
    struct stat locked, current;
    if (fstat(fd, &locked) == 0 && stat(path.c_str(), &current) == 0 && locked.st_dev == current.st_dev &&
        locked.st_ino == current.st_ino) {
      const std::string pid = std::to_string(getpid());
      if (ftruncate(fd, 0) == 0 && pwrite(fd, pid.data(), pid.size(), 0) < 0) {
        // The process id is for people reading the file; the lock holds without it.
      }
      return fd;
    }
    close(fd);
  }
}

void UnlockFile(int fd, const std::string& path, bool remove) {
  if (fd < 0) return;
  if (remove) unlink(path.c_str());
  close(fd);  // releases the lock
}

}  // namespace m3
