// .safetensors reader. The header is untrusted JSON: every size is checked against the file
// before any allocation or copy.
#include "core/safetensors_reader.h"

#include <string_view>

#include "core/core_error.h"
#include "core/mini_json.h"

namespace m3 {
namespace {

// The reference implementation refuses headers above 100 MB; a head file's is a few hundred bytes.
constexpr uint64_t kMaxHeaderSize = 100u * 1000u * 1000u;
constexpr size_t kMaxDimensions = 64;

struct DtypeName {
  const char* name;
  weights::ScalarType type;
};
constexpr DtypeName kSupportedDtypes[] = {
    {"F16", weights::ScalarType::kFloat16},
    {"BF16", weights::ScalarType::kBFloat16},
    {"F32", weights::ScalarType::kFloat32},
    {"F64", weights::ScalarType::kFloat64},
};

class SafetensorsLoader {
 public:
  SafetensorsLoader(const std::vector<uint8_t>& bytes, const std::string& source_name)
      : bytes_(bytes), source_name_(source_name) {}

  StateDict Load() {
    if (bytes_.size() < 8) {
      Fail("is too short to be a .safetensors file (" + std::to_string(bytes_.size()) +
           " bytes); the file is truncated, download it again");
    }
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes_[i];
    if (header_size > bytes_.size() - 8) {
      Fail("declares a " + std::to_string(header_size) + "-byte header but the file has only " +
           std::to_string(bytes_.size()) + " bytes; the file is truncated or corrupted, "
           "download it again");
    }
    if (header_size > kMaxHeaderSize) {
      Fail("declares a " + std::to_string(header_size) + "-byte header, above the 100 MB "
           "limit of the safetensors format; the file is corrupted");
    }
    const std::string_view header(reinterpret_cast<const char*>(bytes_.data()) + 8,
                                  static_cast<size_t>(header_size));
    const json::Value root = json::Parse(header, source_name_ + ": safetensors header");
    if (root.type != json::Value::Type::kObject) {
      Fail(std::string("has a header that is a JSON ") + json::TypeName(root.type) +
           ", not an object of tensors; the file is corrupted");
    }
    data_begin_ = 8 + header_size;
    data_size_ = bytes_.size() - data_begin_;
    budget_left_ = weights::OutputElementBudget(bytes_.size());

    StateDict tensors;
    for (const auto& member : root.object) {
      if (member.first == "__metadata__") {
        CheckMetadata(member.second);
        continue;
      }
      tensors[member.first] = LoadTensor(member.first, member.second);
    }
    return tensors;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) const {
    throw CoreError("ERR_MODEL_FILES", source_name_ + ": " + what);
  }

  [[noreturn]] void FailTensor(const std::string& name, const std::string& what) const {
    Fail("tensor '" + name + "' " + what + "; the file is corrupted or was not written by a "
         "safetensors library");
  }

  void CheckMetadata(const json::Value& metadata) const {
    if (metadata.type != json::Value::Type::kObject) {
      Fail("has a __metadata__ entry that is not an object of strings; the file is corrupted");
    }
    for (const auto& entry : metadata.object) {
      if (entry.second.type != json::Value::Type::kString) {
        Fail("has a __metadata__ value '" + entry.first + "' that is not a string; the file is "
             "corrupted");
      }
    }
  }

  static bool IsNonNegativeInteger(const json::Value& value) {
    return value.type == json::Value::Type::kNumber && value.is_integer && value.integer >= 0;
  }

  weights::ScalarType ParseDtype(const std::string& name, const json::Value* dtype) const {
    if (dtype == nullptr || dtype->type != json::Value::Type::kString) {
      FailTensor(name, "has no \"dtype\" string");
    }
    for (const DtypeName& supported : kSupportedDtypes) {
      if (dtype->string == supported.name) return supported.type;
    }
    Fail("tensor '" + name + "' has dtype \"" + dtype->string + "\", which is not supported for "
         "weights (supported: F16, BF16, F32, F64); convert the tensor to float before saving");
  }

  Tensor LoadTensor(const std::string& name, const json::Value& info) {
    if (info.type != json::Value::Type::kObject) FailTensor(name, "is not described by an object");
    const weights::ScalarType type = ParseDtype(name, info.Find("dtype"));
    const json::Value* shape = info.Find("shape");
    const json::Value* offsets = info.Find("data_offsets");
    if (shape == nullptr || shape->type != json::Value::Type::kArray) {
      FailTensor(name, "has no \"shape\" array");
    }
    if (shape->array.size() > kMaxDimensions) {
      FailTensor(name, "has more than " + std::to_string(kMaxDimensions) + " dimensions");
    }
    if (offsets == nullptr || offsets->type != json::Value::Type::kArray ||
        offsets->array.size() != 2 || !IsNonNegativeInteger(offsets->array[0]) ||
        !IsNonNegativeInteger(offsets->array[1])) {
      FailTensor(name, "has no \"data_offsets\" pair of non-negative integers");
    }

    const uint64_t begin = static_cast<uint64_t>(offsets->array[0].integer);
    const uint64_t end = static_cast<uint64_t>(offsets->array[1].integer);
    if (begin > end || end > data_size_) {
      FailTensor(name, "has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                           "] outside the " + std::to_string(data_size_) + "-byte data section");
    }
    Tensor tensor;
    uint64_t element_count = 1;
    for (const json::Value& dimension : shape->array) {
      if (!IsNonNegativeInteger(dimension)) {
        FailTensor(name, "has a shape entry that is not a non-negative integer");
      }
      tensor.shape.push_back(dimension.integer);
      // Only overflow is checked here; the exact byte count is compared with the offsets below.
      if (!weights::MultiplyWithin(element_count, static_cast<uint64_t>(dimension.integer),
                                   UINT64_MAX / 8, &element_count)) {
        FailTensor(name, "has a shape whose element count overflows 64 bits");
      }
    }
    const uint64_t byte_size = element_count * weights::ItemSize(type);
    if (end - begin != byte_size) {
      FailTensor(name, "covers " + std::to_string(end - begin) + " bytes but its shape needs " +
                           std::to_string(byte_size) + " bytes of " +
                           weights::ScalarTypeName(type));
    }
    if (element_count > budget_left_) {
      Fail("expands to more tensor elements than a file of this size can hold; it is corrupted");
    }
    budget_left_ -= element_count;
    tensor.data.resize(static_cast<size_t>(element_count));
    weights::DecodeElements(type, bytes_.data() + data_begin_ + begin,
                            static_cast<size_t>(element_count), tensor.data.data());
    return tensor;
  }

  const std::vector<uint8_t>& bytes_;
  const std::string& source_name_;
  uint64_t data_begin_ = 0;
  uint64_t data_size_ = 0;
  uint64_t budget_left_ = 0;
};

}  // namespace

StateDict LoadSafetensorsFromBytes(const std::vector<uint8_t>& bytes,
                                   const std::string& source_name) {
  return SafetensorsLoader(bytes, source_name).Load();
}

StateDict LoadSafetensors(const std::string& path) {
  return LoadSafetensorsFromBytes(weights::ReadFileBytes(path), path);
}

}  // namespace m3
