// Fuzz target: the zip reader (central directory, ZIP64 records, local headers, CRC-32) on raw
// archive bytes, then the whole torch.save() reader on the same bytes, as a head file reaches
// it. Seeds: torch.save archives from test/fixtures/weight-readers and variants of them.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "weights/tensor_file.h"
#include "weights/zip_reader.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  m3::fuzz::RunCase("ERR_MODEL_FILES", [&] {
    const m3::ZipArchive archive(bytes, "fuzz.zip");
    for (const m3::ZipEntry& entry : archive.entries()) {
      m3::fuzz::Require(archive.Find(entry.name) != nullptr, "Find misses a listed entry");
      // Each entry on its own: one corrupted entry must not hide a bug in reading the next.
      m3::fuzz::RunCase("ERR_MODEL_FILES", [&] {
        const m3::ByteView view = archive.ReadStored(entry);
        m3::fuzz::Require(view.size == entry.uncompressed_size && view.size <= archive.size(),
                          "stored entry '" + entry.name + "' has a size the directory does not give");
        m3::fuzz::Require(m3::Crc32(view.data, view.size) == entry.crc32, "stored entry returned despite a bad CRC");
      });
    }
  });
  m3::fuzz::RunCase("ERR_MODEL_FILES", [&] { m3::fuzz::CheckStateDict(m3::LoadTensorFileFromBytes(bytes, "fuzz.pt")); });
  return 0;
}
