#include "kernels/cuda/cuda_device.h"

#include <cuda_runtime.h>

namespace m3 {
namespace cuda {

const char* const kNotBuiltMessage = "";

bool Built() { return true; }

int DeviceCount(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = std::string("no usable CUDA device: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error state
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device is visible (CUDA_VISIBLE_DEVICES, driver)";
  return n;
}

void MakeCurrent(int device) {
  if (cudaSetDevice(device) != cudaSuccess) cudaGetLastError();
}

std::string DeviceName(int device) {
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "unknown";
  return std::string(p.name) + ", compute capability " + std::to_string(p.major) + "." + std::to_string(p.minor) + ", " +
         std::to_string(p.totalGlobalMem >> 30) + " GiB";
}

}  // namespace cuda
}  // namespace m3
