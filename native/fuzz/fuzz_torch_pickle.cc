// Fuzz target: the restricted unpickler and the torch.save() state-dict reader behind it. The
// input is the pickle alone (archive/data.pkl); the target wraps it in a valid stored zip with
// storages archive/data/0 .. archive/data/7 of known sizes, so mutations reach the pickle
// machine, the allow-list and the storage/view checks instead of stopping at the zip's CRC.
// Seeds: the data.pkl of every torch.save fixture under test/fixtures.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "weights/torch_pickle_reader.h"
#include "weights/zip_reader.h"
#include "fuzz/fuzz_support.h"

namespace {

constexpr int kStorageCount = 8;

void PutLittleEndian(std::vector<uint8_t>& out, uint64_t value, int width) {
  for (int i = 0; i < width; ++i) out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// A zip of stored entries with correct CRCs, the layout torch.save writes (no ZIP64).
std::vector<uint8_t> StoredZip(const std::vector<std::pair<std::string, std::vector<uint8_t>>>& files) {
  std::vector<uint8_t> out, directory;
  for (const auto& [name, data] : files) {
    const uint32_t crc = m3::Crc32(data.data(), data.size());
    const uint64_t offset = out.size();
    PutLittleEndian(out, 0x04034b50, 4);
    PutLittleEndian(out, 20, 2);
    PutLittleEndian(out, 0, 2);
    PutLittleEndian(out, 0, 2);
    PutLittleEndian(out, 0, 4);
    PutLittleEndian(out, crc, 4);
    PutLittleEndian(out, data.size(), 4);
    PutLittleEndian(out, data.size(), 4);
    PutLittleEndian(out, name.size(), 2);
    PutLittleEndian(out, 0, 2);
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), data.begin(), data.end());
    PutLittleEndian(directory, 0x02014b50, 4);
    PutLittleEndian(directory, 20, 2);
    PutLittleEndian(directory, 20, 2);
    PutLittleEndian(directory, 0, 2);
    PutLittleEndian(directory, 0, 2);
    PutLittleEndian(directory, 0, 4);
    PutLittleEndian(directory, crc, 4);
    PutLittleEndian(directory, data.size(), 4);
    PutLittleEndian(directory, data.size(), 4);
    PutLittleEndian(directory, name.size(), 2);
    for (int i = 0; i < 4; ++i) PutLittleEndian(directory, 0, 2);  // extra, comment, disk, internal attributes
    PutLittleEndian(directory, 0, 4);
    PutLittleEndian(directory, offset, 4);
    directory.insert(directory.end(), name.begin(), name.end());
  }
  const uint64_t directory_offset = out.size();
  out.insert(out.end(), directory.begin(), directory.end());
  PutLittleEndian(out, 0x06054b50, 4);
  PutLittleEndian(out, 0, 4);
  PutLittleEndian(out, files.size(), 2);
  PutLittleEndian(out, files.size(), 2);
  PutLittleEndian(out, directory.size(), 4);
  PutLittleEndian(out, directory_offset, 4);
  PutLittleEndian(out, 0, 2);
  return out;
}

// Storage k holds 64 + 16k bytes of a fixed pattern: sizes differ, so a view that fits one
// storage can overrun another, and the values decode to a mix of normal numbers, infinities
// and NaNs in every float type.
const std::vector<std::pair<std::string, std::vector<uint8_t>>>& Storages() {
  static const auto storages = [] {
    std::vector<std::pair<std::string, std::vector<uint8_t>>> files;
    for (int key = 0; key < kStorageCount; ++key) {
      std::vector<uint8_t> data(64 + 16 * key);
      for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 37 + key * 11 + 0x3C);
      files.emplace_back("archive/data/" + std::to_string(key), std::move(data));
    }
    return files;
  }();
  return storages;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::pair<std::string, std::vector<uint8_t>>> files;
  files.emplace_back("archive/data.pkl", std::vector<uint8_t>(data, data + size));
  files.emplace_back("archive/byteorder", std::vector<uint8_t>{'l', 'i', 't', 't', 'l', 'e'});
  for (const auto& storage : Storages()) files.push_back(storage);
  const std::vector<uint8_t> archive = StoredZip(files);
  return m3::fuzz::RunCase("ERR_MODEL_FILES", [&] {
    m3::fuzz::CheckStateDict(m3::LoadTorchStateDictFromBytes(archive, "fuzz.pt"));
  });
}
