// .safetensors reader. The header is untrusted JSON: every size is checked against the file
// before any allocation or copy.
#include "weights/safetensors_reader.h"

#include <algorithm>
#include <string_view>

#include "base/error.h"
#include "weights/mini_json.h"

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

// One tensor as the header describes it, checked on its own but not yet against the others.
struct TensorEntry {
  std::string name;
  weights::ScalarType type = weights::ScalarType::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
  uint64_t element_count = 0;
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

    std::vector<TensorEntry> entries;
    for (const auto& member : root.object) {
      if (member.first == "__metadata__") {
        CheckMetadata(member.second);
        continue;
      }
      entries.push_back(ParseEntry(member.first, member.second));
    }
    CheckTiling(entries);
    StateDict tensors;
    for (const TensorEntry& entry : entries) tensors[entry.name] = Decode(entry);
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

  TensorEntry ParseEntry(const std::string& name, const json::Value& info) const {
    if (info.type != json::Value::Type::kObject) FailTensor(name, "is not described by an object");
    TensorEntry entry;
    entry.name = name;
    entry.type = ParseDtype(name, info.Find("dtype"));
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

    entry.begin = static_cast<uint64_t>(offsets->array[0].integer);
    entry.end = static_cast<uint64_t>(offsets->array[1].integer);
    if (entry.begin > entry.end || entry.end > data_size_) {
      FailTensor(name, "has data_offsets " + OffsetsText(entry) + " outside the " +
                           std::to_string(data_size_) + "-byte data section");
    }
    entry.element_count = 1;
    for (const json::Value& dimension : shape->array) {
      if (!IsNonNegativeInteger(dimension)) {
        FailTensor(name, "has a shape entry that is not a non-negative integer");
      }
      entry.shape.push_back(dimension.integer);
      // Only overflow is checked here; the exact byte count is compared with the offsets below.
      if (!weights::MultiplyWithin(entry.element_count, static_cast<uint64_t>(dimension.integer),
                                   UINT64_MAX / 8, &entry.element_count)) {
        FailTensor(name, "has a shape whose element count overflows 64 bits");
      }
    }
    const uint64_t byte_size = entry.element_count * weights::ItemSize(entry.type);
    if (entry.end - entry.begin != byte_size) {
      FailTensor(name, "covers " + std::to_string(entry.end - entry.begin) +
                           " bytes but its shape needs " + std::to_string(byte_size) +
                           " bytes of " + weights::ScalarTypeName(entry.type));
    }
    return entry;
  }

  static std::string OffsetsText(const TensorEntry& entry) {
    return "[" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) + "]";
  }

  // The format gives every byte of the data section to exactly one tensor, as the reference
  // implementation enforces: tensors sharing bytes would let a crafted file alias one weight
  // onto another (and expand a small file into many copies of the same data), and bytes no
  // tensor owns are a file that was cut or spliced. Both are refused rather than guessed at.
  void CheckTiling(std::vector<TensorEntry>& entries) const {
    std::sort(entries.begin(), entries.end(), [](const TensorEntry& a, const TensorEntry& b) {
      if (a.begin != b.begin) return a.begin < b.begin;
      return a.end != b.end ? a.end < b.end : a.name < b.name;  // names: the same message every time
    });
    uint64_t covered = 0;  // bytes [0, covered) belong to the tensors checked so far
    const TensorEntry* previous = nullptr;
    for (const TensorEntry& entry : entries) {
      if (entry.begin < covered) {
        Fail("has tensors '" + previous->name + "' (data_offsets " + OffsetsText(*previous) +
             ") and '" + entry.name + "' (data_offsets " + OffsetsText(entry) + ") that overlap "
             "in the data section; the file is corrupted or was not written by a safetensors "
             "library");
      }
      if (entry.begin > covered) {
        Fail("has " + std::to_string(entry.begin - covered) + " bytes of the data section that "
             "no tensor covers, " + (previous ? "between tensor '" + previous->name + "' (data_offsets " +
             OffsetsText(*previous) + ") and" : std::string("before")) + " tensor '" + entry.name +
             "' (data_offsets " + OffsetsText(entry) + "); the file is corrupted or was not "
             "written by a safetensors library");
      }
      covered = entry.end;
      // A zero-byte tensor owns nothing, so the tensor before it stays the one that reaches `covered`.
      if (previous == nullptr || entry.end > entry.begin) previous = &entry;
    }
    if (covered != data_size_) {
      Fail("has " + std::to_string(data_size_ - covered) + " bytes at the end of the data "
           "section that no tensor covers" + (previous ? " (after tensor '" + previous->name +
           "', data_offsets " + OffsetsText(*previous) + ")" : std::string()) +
           "; the file is corrupted or was not written by a safetensors library");
    }
  }

  // The tiling bounds the output: every element decoded has bytes of its own in the file.
  Tensor Decode(const TensorEntry& entry) const {
    Tensor tensor;
    tensor.shape = entry.shape;
    tensor.data.resize(static_cast<size_t>(entry.element_count));
    weights::DecodeElements(entry.type, bytes_.data() + data_begin_ + entry.begin,
                            static_cast<size_t>(entry.element_count), tensor.data.data());
    return tensor;
  }

  const std::vector<uint8_t>& bytes_;
  const std::string& source_name_;
  uint64_t data_begin_ = 0;
  uint64_t data_size_ = 0;
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
