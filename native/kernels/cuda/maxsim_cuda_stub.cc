// The CUDA MaxSim entry points of a build without a CUDA toolkit: every one reports ERR_DEVICE.
#include "core/core_error.h"
#include "kernels/cuda/maxsim_cuda.h"

namespace m3 {
namespace cuda {

namespace {
const char* kNotBuilt =
    "this build of bge-m3 has no CUDA kernels: CMake found no CUDA toolkit (nvcc) when the addon was built. "
    "Install the CUDA toolkit and rebuild (npm rebuild bge-m3, or npm run build:native), or use the CPU";
}

struct DeviceMultiVectors::Impl {};

bool Built() { return false; }

std::vector<std::string> TiledConfigNames() { return {}; }

int DeviceCount(std::string* why) {
  if (why) *why = kNotBuilt;
  return 0;
}

void MakeCurrent(int) {}

std::string DeviceName(int) { return "none"; }

std::unique_ptr<DeviceMultiVectors> DeviceMultiVectors::Upload(const MultiVectorSet&, VectorFormat, int) {
  throw CoreError("ERR_DEVICE", kNotBuilt);
}

DeviceMultiVectors::DeviceMultiVectors(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceMultiVectors::~DeviceMultiVectors() = default;
int64_t DeviceMultiVectors::count() const { return 0; }
int64_t DeviceMultiVectors::dim() const { return 0; }
int64_t DeviceMultiVectors::rows() const { return 0; }
VectorFormat DeviceMultiVectors::format() const { return VectorFormat::kF32; }
int DeviceMultiVectors::device() const { return 0; }
bool DeviceMultiVectors::uses_wgmma() const { return false; }
bool DeviceMultiVectors::uses_tma() const { return false; }
int64_t DeviceMultiVectors::device_bytes() const { return 0; }
double DeviceMultiVectors::last_kernel_seconds() const { return 0; }

void DeviceMultiVectors::MaxSimBatch(const float*, const uint32_t*, int64_t, float*, Kernel, int) const {
  throw CoreError("ERR_DEVICE", kNotBuilt);
}

}  // namespace cuda
}  // namespace m3
