// The CUDA devices of a build without a CUDA toolkit: none.
#include "kernels/cuda/cuda_device.h"

namespace m3 {
namespace cuda {

const char* const kNotBuiltMessage =
    "this build of bge-m3 has no CUDA kernels: CMake found no CUDA toolkit (nvcc) when the addon was built. "
    "Install the CUDA toolkit and rebuild (npm rebuild bge-m3, or npm run build:native), or use the CPU";

bool Built() { return false; }

int DeviceCount(std::string* why) {
  if (why) *why = kNotBuiltMessage;
  return 0;
}

void MakeCurrent(int) {}

std::string DeviceName(int) { return "none"; }

}  // namespace cuda
}  // namespace m3
