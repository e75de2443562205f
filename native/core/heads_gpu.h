// The BAAI layout's heads on an NVIDIA GPU, where a CUDA session leaves last_hidden_state: only
// the heads' results cross to the host. A batch the device cannot take (out of memory beside
// ONNX Runtime's arena) runs again with host outputs through the CPU heads.
#pragma once
#include <memory>
#include <string>

#include "core/heads.h"

namespace m3 {
namespace cuda {
class DeviceHeads;
}

class GpuHeads : public Heads {
 public:
  /// Uploads the CPU heads' weights to the session's device and checks them on a probe input
  /// against the CPU heads. Returns null, with the reason in `why`, where they cannot run there
  /// (a build without CUDA kernels, a driver older than their runtime, a failed check).
  static std::unique_ptr<GpuHeads> Create(EncoderSession& session, const CpuHeads& cpu, std::string* why);
  ~GpuHeads() override;

  std::vector<const char*> GraphOutputs(OutputSet) const override { return {session_.hidden_output().c_str()}; }
  void Apply(const HeadsBatch& batch) const override;
  const char* device() const override { return "cuda"; }

 private:
  GpuHeads(EncoderSession& session, const CpuHeads& cpu, std::unique_ptr<cuda::DeviceHeads> device);
  /// The GPU heads on a device-resident probe output against the CPU heads on the same output
  /// copied to the host; throws (CoreError or Ort::Exception) when either fails or they differ.
  void Check() const;

  EncoderSession& session_;
  const CpuHeads& cpu_;
  std::unique_ptr<cuda::DeviceHeads> device_;
};

}  // namespace m3
