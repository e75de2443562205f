// The GPU heads of a build without a CUDA toolkit: Upload reports ERR_DEVICE.
#include "base/error.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/heads_cuda.h"

namespace m3 {
namespace cuda {

struct DeviceHeads::Impl {};

std::unique_ptr<DeviceHeads> DeviceHeads::Upload(const float*, const float*, int64_t, int64_t, const float*, float, int) {
  throw CoreError("ERR_DEVICE", std::string(kNotBuiltMessage) + " (the heads run on the CPU)");
}

DeviceHeads::DeviceHeads(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceHeads::~DeviceHeads() = default;
int64_t DeviceHeads::hidden() const { return 0; }
int64_t DeviceHeads::dim() const { return 0; }
void DeviceHeads::Run(const void*, HiddenFormat, int64_t, int64_t, const int64_t*, float*, float*, float*) const {
  throw CoreError("ERR_DEVICE", kNotBuiltMessage);
}
void DeviceHeads::RunHost(const void*, HiddenFormat, int64_t, int64_t, const int64_t*, float*, float*, float*) const {
  throw CoreError("ERR_DEVICE", kNotBuiltMessage);
}

}  // namespace cuda
}  // namespace m3
