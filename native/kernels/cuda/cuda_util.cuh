// Host-side CUDA helpers shared by the CUDA kernels' translation units: error checks that throw
// CoreError(ERR_DEVICE), owned device buffers and a scoped current device.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "base/error.h"

namespace m3 {
namespace cuda {
namespace util {

inline void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw CoreError("ERR_DEVICE", std::string("CUDA ") + what + " failed: " + cudaGetErrorString(err));
}

/// Device memory freed on scope exit.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  /// At least n bytes, keeping the current allocation when it is large enough (scratch).
  void Reserve(size_t n, const char* what) {
    if (n > bytes) Allocate(n, what);
  }
  void Allocate(size_t n, const char* what) {
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    bytes = 0;
    if (n == 0) return;
    const cudaError_t err = cudaMalloc(&ptr, n);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear it: the failure is reported here
      throw CoreError("ERR_DEVICE", std::string("cannot allocate ") + std::to_string(n >> 20) + " MiB on the GPU for " + what +
                                        ": " + cudaGetErrorString(err));
    }
    bytes = n;
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

/// Which device this thread's CUDA calls go to, restored on scope exit.
class OnDevice {
 public:
  explicit OnDevice(int device) {
    Check(cudaGetDevice(&previous_), "cudaGetDevice");
    Check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~OnDevice() { cudaSetDevice(previous_); }
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace util
}  // namespace cuda
}  // namespace m3
