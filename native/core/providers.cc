#include "core/providers.h"

#include "base/error.h"

namespace m3 {
namespace {

/// The registered providers. A new one adds its line here.
const ExecutionProvider* const* Registry(size_t* count) {
  static const ExecutionProvider* const providers[] = {&CpuProvider(), &CudaProvider()};
  *count = sizeof(providers) / sizeof(providers[0]);
  return providers;
}

class Cpu final : public ExecutionProvider {
 public:
  const char* name() const override { return "cpu"; }
  bool host() const override { return true; }
  void Append(Ort::SessionOptions&, const ProviderSpec&) const override {}  // ONNX Runtime's default
};

}  // namespace

std::string ExecutionProvider::DeviceName(const ProviderSpec& spec) const {
  return std::string(name()) + " device " + std::to_string(spec.device_id);
}

const ExecutionProvider& ProviderSpec::get() const { return provider ? *provider : CpuProvider(); }

const ExecutionProvider& CpuProvider() {
  static const Cpu cpu;
  return cpu;
}

std::vector<std::string> ProviderNames() {
  size_t count = 0;
  const ExecutionProvider* const* providers = Registry(&count);
  std::vector<std::string> names;
  for (size_t i = 0; i < count; ++i) names.emplace_back(providers[i]->name());
  return names;
}

const ExecutionProvider& FindProvider(const std::string& name) {
  size_t count = 0;
  const ExecutionProvider* const* providers = Registry(&count);
  for (size_t i = 0; i < count; ++i)
    if (name == providers[i]->name()) return *providers[i];
  std::string list;
  for (size_t i = 0; i < count; ++i)
    list += std::string(i == 0 ? "" : i + 1 == count ? " or " : ", ") + "'" + providers[i]->name() + "'";
  throw CoreError("ERR_INPUT", "device must be " + list + ", got '" + name + "'.");
}

}  // namespace m3
