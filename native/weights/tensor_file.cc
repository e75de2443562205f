// Format detection for head weight files and the dtype/file helpers both readers share.
#include "weights/tensor_file.h"

#if defined(__x86_64__) || defined(__i386__)
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "base/error.h"
#include "base/half.h"
#include "weights/safetensors_reader.h"
#include "weights/torch_pickle_reader.h"

namespace m3 {
namespace weights {

size_t ItemSize(ScalarType type) {
  switch (type) {
    case ScalarType::kFloat16:
    case ScalarType::kBFloat16:
      return 2;
    case ScalarType::kFloat32:
      return 4;
    case ScalarType::kFloat64:
      return 8;
  }
  return 4;
}

const char* ScalarTypeName(ScalarType type) {
  switch (type) {
    case ScalarType::kFloat16:
      return "float16";
    case ScalarType::kBFloat16:
      return "bfloat16";
    case ScalarType::kFloat32:
      return "float32";
    case ScalarType::kFloat64:
      return "float64";
  }
  return "unknown";
}

static float FloatFromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// Byte-by-byte assembly keeps decoding correct on any host byte order and any alignment.
static uint64_t LoadLittleEndian(const uint8_t* src, size_t size) {
  uint64_t value = 0;
  for (size_t i = size; i-- > 0;) value = (value << 8) | src[i];
  return value;
}

float DecodeElement(ScalarType type, const uint8_t* src) {
  switch (type) {
    case ScalarType::kFloat16:
      return HalfBitsToFloat(static_cast<uint16_t>(LoadLittleEndian(src, 2)));
    case ScalarType::kBFloat16:
      return Bf16ToFloat(static_cast<uint16_t>(LoadLittleEndian(src, 2)));
    case ScalarType::kFloat32:
      return FloatFromBits(static_cast<uint32_t>(LoadLittleEndian(src, 4)));
    case ScalarType::kFloat64: {
      const uint64_t bits = LoadLittleEndian(src, 8);
      double value;
      std::memcpy(&value, &bits, sizeof value);
      return static_cast<float>(value);
    }
  }
  return 0.0f;
}

void DecodeElements(ScalarType type, const uint8_t* src, size_t count, float* dst) {
  const size_t item_size = ItemSize(type);
  for (size_t i = 0; i < count; ++i) dst[i] = DecodeElement(type, src + i * item_size);
}

bool MultiplyWithin(uint64_t a, uint64_t b, uint64_t limit, uint64_t* product) {
  if (a != 0 && b > limit / a) return false;
  *product = a * b;
  return *product <= limit;
}

std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::error_code error;
  const auto status = std::filesystem::status(path, error);
  if (error || !std::filesystem::exists(status)) {
    throw CoreError("ERR_MODEL_FILES", path + ": file not found; check the model directory path "
                                              "and that the download finished");
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw CoreError("ERR_MODEL_FILES", path + ": is not a regular file (expected a weights file)");
  }
  // Checked again on the descriptor: a FIFO swapped in after the check above must neither block
  // the open (O_NONBLOCK) nor be read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    throw CoreError("ERR_MODEL_FILES",
                    path + ": cannot be opened for reading; check its permissions");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw CoreError("ERR_MODEL_FILES", path + ": is not a regular file (expected a weights file)");
  }
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(static_cast<size_t>(st.st_size));
  } catch (const std::bad_alloc&) {
    ::close(fd);
    throw CoreError("ERR_MODEL_FILES", path + ": " + std::to_string(st.st_size) + " bytes do not fit in memory");
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t got = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      ::close(fd);
      throw CoreError("ERR_MODEL_FILES", path + ": read failed part-way; the file may be on a "
                                                "failing disk or still being written");
    }
    done += static_cast<size_t>(got);
  }
  ::close(fd);
  return bytes;
}

uint64_t OutputElementBudget(uint64_t file_size) {
  // fp16 storage doubles in size as fp32, and a few shared views may repeat it; 4x the file in
  // elements (16x in bytes) plus a small floor covers that and nothing absurd.
  constexpr uint64_t kFloor = 1u << 20;
  if (file_size > (std::numeric_limits<uint64_t>::max() - kFloor) / 4) {
    return std::numeric_limits<uint64_t>::max();
  }
  return file_size * 4 + kFloor;
}

}  // namespace weights

namespace {

bool StartsWith(const std::vector<uint8_t>& bytes, const char* magic, size_t size) {
  return bytes.size() >= size && std::memcmp(bytes.data(), magic, size) == 0;
}

std::string LeadingBytesHex(const std::vector<uint8_t>& bytes) {
  std::string hex;
  char buffer[4];
  for (size_t i = 0; i < bytes.size() && i < 8; ++i) {
    std::snprintf(buffer, sizeof buffer, "%s%02x", i == 0 ? "" : " ", bytes[i]);
    hex += buffer;
  }
  return hex;
}

}  // namespace

StateDict LoadTensorFileFromBytes(const std::vector<uint8_t>& bytes,
                                  const std::string& source_name) {
  if (bytes.empty()) {
    throw CoreError("ERR_MODEL_FILES", source_name + ": the file is empty; download it again");
  }
  // A local file header, or an end-of-central-directory record for an empty archive.
  if (StartsWith(bytes, "PK\x03\x04", 4) || StartsWith(bytes, "PK\x05\x06", 4)) {
    return LoadTorchStateDictFromBytes(bytes, source_name);
  }
  // torch.save before 1.6 (or with _use_new_zipfile_serialization=False) wrote raw pickles,
  // which start with the PROTO opcode.
  if (bytes[0] == 0x80) {
    throw CoreError("ERR_MODEL_FILES",
                    source_name + ": is in the legacy (non-zip) torch.save format, which is not "
                                  "supported. Re-save it with torch 1.6 or newer: "
                                  "torch.save(torch.load(path, weights_only=True), path)");
  }
  // A safetensors file begins with its header length, then the JSON header's opening brace.
  if (bytes.size() >= 9 && bytes[8] == '{') return LoadSafetensorsFromBytes(bytes, source_name);
  throw CoreError("ERR_MODEL_FILES",
                  source_name + ": is neither a torch.save() zip archive nor a .safetensors file "
                                "(it starts with bytes " + LeadingBytesHex(bytes) +
                                    "); the download may be corrupted or an HTML error page");
}

StateDict LoadTensorFile(const std::string& path) {
  return LoadTensorFileFromBytes(weights::ReadFileBytes(path), path);
}

}  // namespace m3
