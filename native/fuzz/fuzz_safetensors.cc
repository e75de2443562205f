// Fuzz target: the .safetensors reader (header length, JSON header, dtypes, shapes, data
// offsets and their tiling of the data section) on raw file bytes. Seeds: the .safetensors
// fixtures under test/fixtures and hand-written near misses (overlaps, gaps, odd headers).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "weights/safetensors_reader.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  return m3::fuzz::RunCase("ERR_MODEL_FILES", [&] {
    const m3::StateDict tensors = m3::LoadSafetensorsFromBytes(bytes, "fuzz.safetensors");
    m3::fuzz::CheckStateDict(tensors);
    // Tiling gives every value its own bytes: at least two per value (F16/BF16) after the header.
    uint64_t values = 0;
    for (const auto& entry : tensors) values += entry.second.data.size();
    m3::fuzz::Require(values * 2 <= size, "more values than the file has bytes for");
  });
}
