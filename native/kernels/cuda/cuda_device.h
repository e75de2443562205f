// CUDA devices as the rest of the engine sees them: whether this build has CUDA kernels, which
// devices are visible, and which one a thread works on.
//
// Plain C++ interface (no CUDA headers): built from cuda_device.cu when CMake finds a CUDA
// toolkit, from cuda_device_stub.cc otherwise.
#pragma once
#include <string>

namespace m3 {
namespace cuda {

/// Whether this build has the CUDA kernels (a compile-time fact).
bool Built();

/// Why a build without CUDA kernels cannot run them, and how to get them (for ERR_DEVICE messages).
extern const char* const kNotBuiltMessage;

/// Visible CUDA devices; 0 when not built with CUDA, without a driver or without a device, in
/// which case `why` (if given) says which.
int DeviceCount(std::string* why = nullptr);

/// "name, compute capability x.y, N GiB" of a device, for reports.
std::string DeviceName(int device);

/// Makes `device` the calling thread's current CUDA device, best effort (nothing without CUDA or
/// a usable driver): work a library does on this thread then lands on that device, not device 0.
void MakeCurrent(int device);

}  // namespace cuda
}  // namespace m3
