// The CUDA MaxSim entry points of a build without a CUDA toolkit: every one reports ERR_DEVICE.
#include "base/error.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/maxsim_cuda.h"

namespace m3 {
namespace cuda {

struct DeviceMultiVectors::Impl {};

std::vector<std::string> TiledConfigNames() { return {}; }

std::unique_ptr<DeviceMultiVectors> DeviceMultiVectors::Upload(const MultiVectorSet&, VectorFormat, int) {
  throw CoreError("ERR_DEVICE", kNotBuiltMessage);
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
  throw CoreError("ERR_DEVICE", kNotBuiltMessage);
}

}  // namespace cuda
}  // namespace m3
