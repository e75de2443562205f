// Tests for the head weight readers (.pt via the restricted unpickler, .safetensors, zip, JSON).
//
// Usage: weight_readers_test [fixtures_dir [fuzz_scale]]
//   fixtures_dir defaults to test/fixtures/weight-readers; fuzz_scale multiplies the fuzz
//   iterations (default 1, a few seconds under ASan).
// The fixtures come from scripts/gen_weight_reader_fixtures.py: values are checked exactly
// against what PyTorch itself wrote, refusals against substrings of the error message, and the
// readers are fuzzed (every truncation, random byte flips, mutated pickles inside valid
// archives) to show that corrupted input only ever raises CoreError.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <string>
#include <vector>

#include "base/error.h"
#include "weights/mini_json.h"
#include "weights/restricted_unpickler.h"
#include "weights/safetensors_reader.h"
#include "base/half.h"
#include "weights/tensor_file.h"
#include "weights/torch_pickle_reader.h"
#include "weights/zip_reader.h"

namespace {

int failures = 0;
int checks = 0;

void Check(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

std::string ReadText(const std::string& path) {
  const std::vector<uint8_t> bytes = m3::weights::ReadFileBytes(path);
  return std::string(bytes.begin(), bytes.end());
}

// ---- fp16 / bf16 conversion against an arithmetic reference ----

void TestHalfConversion() {
  int mismatches = 0;
  for (uint32_t bits = 0; bits <= 0xFFFF; ++bits) {
    const int exponent = (bits >> 10) & 0x1F;
    const int mantissa = bits & 0x3FF;
    const double sign = (bits & 0x8000) ? -1.0 : 1.0;
    const float actual = m3::HalfBitsToFloat(static_cast<uint16_t>(bits));
    bool ok;
    if (exponent == 0x1F) {
      ok = mantissa == 0 ? std::isinf(actual) && std::signbit(actual) == (sign < 0) : std::isnan(actual);
    } else {
      const double expected = exponent == 0 ? sign * std::ldexp(mantissa, -24)
                                            : sign * std::ldexp(1024 + mantissa, exponent - 25);
      ok = static_cast<double>(actual) == expected && std::signbit(actual) == (sign < 0);
    }
    if (!ok) ++mismatches;
  }
  Check(mismatches == 0, "HalfBitsToFloat matches ldexp arithmetic for all 65536 inputs (" +
                             std::to_string(mismatches) + " mismatches)");
  // NaN payloads survive: 0x7E01 has quiet bit and payload bit 0 set.
  float nan_value = m3::HalfBitsToFloat(0x7E01);
  uint32_t nan_bits;
  std::memcpy(&nan_bits, &nan_value, 4);
  Check(nan_bits == 0x7FC02000u, "fp16 NaN payload is widened, not replaced");
  // The bulk conversion (F16C where the CPU has it) against the scalar one, every value, at
  // every offset of a vector (tails included).
  std::vector<uint16_t> all(0x10000 + 7);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i * 40503u);  // odd multiplier: a permutation mod 2^16
  for (size_t offset = 0; offset < 8; ++offset) {
    std::vector<float> wide(all.size() - offset), bf(all.size() - offset);
    m3::WidenHalfs(all.data() + offset, wide.size(), wide.data());
    m3::WidenBf16s(all.data() + offset, bf.size(), bf.data());
    int bulk_mismatches = 0;
    for (size_t i = 0; i < wide.size(); ++i) {
      const float one = m3::HalfBitsToFloat(all[offset + i]);
      const bool same = std::isnan(one) ? std::isnan(wide[i]) : std::memcmp(&one, &wide[i], 4) == 0;
      const float b = m3::Bf16ToFloat(all[offset + i]);
      if (!same || (std::isnan(b) ? !std::isnan(bf[i]) : std::memcmp(&b, &bf[i], 4) != 0)) ++bulk_mismatches;
    }
    Check(bulk_mismatches == 0, "WidenHalfs / WidenBf16s match the scalar conversions at offset " + std::to_string(offset));
  }
  // fp32 -> fp16: every half round-trips, the midpoint between two neighbours rounds to the even
  // one, a hair either side rounds to the nearer, and what lies past 65504 is held there.
  int narrow_mismatches = 0;
  for (uint32_t bits = 0; bits < 0x7C00u; ++bits) {  // the finite non-negative halves, and their negatives
    for (const uint32_t sign : {0u, 0x8000u}) {
      const auto h = static_cast<uint16_t>(bits | sign);
      if (m3::FloatToHalfBits(m3::HalfBitsToFloat(h)) != h) ++narrow_mismatches;
      if (bits + 1 >= 0x7C00u) continue;
      const double lo = m3::HalfBitsToFloat(h), hi = m3::HalfBitsToFloat(static_cast<uint16_t>(h + 1));
      const auto mid = static_cast<float>((lo + hi) / 2);  // exact in fp32: halves have 11 significant bits
      const uint16_t even = (h & 1u) ? static_cast<uint16_t>(h + 1) : h;
      if (m3::FloatToHalfBits(mid) != even) ++narrow_mismatches;
      if (m3::FloatToHalfBits(std::nextafter(mid, static_cast<float>(lo))) != h) ++narrow_mismatches;
      if (m3::FloatToHalfBits(std::nextafter(mid, static_cast<float>(hi))) != static_cast<uint16_t>(h + 1)) ++narrow_mismatches;
    }
  }
  Check(narrow_mismatches == 0, "FloatToHalfBits rounds to nearest even for every pair of neighbouring halves (" +
                                    std::to_string(narrow_mismatches) + " mismatches)");
  bool clamped = false;
  Check(m3::FloatToHalfBits(-3.4028235e38f, &clamped) == 0xFBFFu && clamped, "the float32 minimum is held at -65504");
  clamped = false;
  Check(m3::FloatToHalfBits(65519.0f, &clamped) == 0x7BFFu && !clamped, "65519 rounds to 65504");
  Check(m3::FloatToHalfBits(65520.0f, &clamped) == 0x7BFFu && clamped, "65520 (rounds to infinity in IEEE) is held at 65504");
  Check(m3::FloatToHalfBits(-INFINITY) == 0xFC00u && (m3::FloatToHalfBits(NAN) & 0x7FFFu) > 0x7C00u, "infinity and NaN stay");
  Check(m3::FloatToHalfBits(1e-10f) == 0 && m3::FloatToHalfBits(-1e-10f) == 0x8000u, "below the smallest subnormal: signed zero");

  Check(m3::Bf16ToFloat(0x3F80) == 1.0f, "bf16 0x3F80 is 1.0");
  Check(m3::Bf16ToFloat(0xC049) == -3.140625f, "bf16 0xC049 is -3.140625");
}

// ---- JSON parser ----

bool JsonThrows(const std::string& text) {
  try {
    m3::json::Parse(text, "test.json");
    return false;
  } catch (const m3::CoreError& error) {
    return error.code() == "ERR_MODEL_FILES" && std::string(error.what()).rfind("test.json: ", 0) == 0;
  }
}

void TestJson() {
  const m3::json::Value value = m3::json::Parse(
      " {\"a\": [1, -2, 3.5e2, true, null], \"s\": \"q\\\"\\\\\\/\\n\\u00e9\\ud83d\\ude00\", "
      "\"big\": 18446744073709551616, \"n\": -0.125} ",
      "test.json");
  const m3::json::Value* array = value.Find("a");
  Check(array && array->array.size() == 5 && array->array[0].is_integer && array->array[0].integer == 1 &&
            array->array[1].integer == -2 && !array->array[2].is_integer && array->array[2].number == 350 &&
            array->array[3].boolean && array->array[4].type == m3::json::Value::Type::kNull,
        "JSON array of mixed values");
  const m3::json::Value* text = value.Find("s");
  Check(text && text->string == "q\"\\/\n\xC3\xA9\xF0\x9F\x98\x80", "JSON string escapes and surrogate pair");
  const m3::json::Value* big = value.Find("big");
  Check(big && !big->is_integer && big->number == 18446744073709551616.0, "integer beyond int64 is a double");
  Check(value.Find("n") && value.Find("n")->number == -0.125, "negative fraction");
  const char* bad[] = {"", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "\"\\x\"", "\"\\ud800\"",
                       "\"\\udc00\"", "{\"a\":1,\"a\":2}", "tru", "\"a\nb\"", "[1] 2", "1e999",
                       "{1:2}", "\"unterminated"};
  for (const char* text_case : bad) Check(JsonThrows(text_case), std::string("JSON refuses: ") + text_case);
  std::string deep(m3::json::kMaxDepth + 1, '[');
  deep += std::string(m3::json::kMaxDepth + 1, ']');
  Check(JsonThrows(deep), "JSON refuses nesting beyond kMaxDepth");
  std::string ok_depth(m3::json::kMaxDepth, '[');
  ok_depth += std::string(m3::json::kMaxDepth, ']');
  Check(!JsonThrows(ok_depth), "JSON accepts nesting of exactly kMaxDepth");
}

// ---- fixture cases ----

bool SameFloat(float actual, const m3::json::Value& expected) {
  if (expected.type == m3::json::Value::Type::kString) {
    if (expected.string == "nan") return std::isnan(actual);
    if (expected.string == "inf") return std::isinf(actual) && actual > 0;
    if (expected.string == "-inf") return std::isinf(actual) && actual < 0;
    return false;
  }
  return expected.type == m3::json::Value::Type::kNumber && static_cast<double>(actual) == expected.number &&
         std::signbit(actual) == std::signbit(expected.number);
}

void CompareStateDict(const m3::StateDict& actual, const m3::json::Value& expected, const std::string& label) {
  const m3::json::Value* tensors = expected.Find("tensors");
  Check(tensors && actual.size() == tensors->object.size(),
        label + ": tensor count " + std::to_string(actual.size()));
  if (!tensors) return;
  for (const auto& [name, want] : tensors->object) {
    const auto found = actual.find(name);
    if (found == actual.end()) {
      Check(false, label + ": missing tensor '" + name + "'");
      continue;
    }
    const m3::Tensor& tensor = found->second;
    const m3::json::Value* shape = want.Find("shape");
    bool shape_ok = shape && shape->array.size() == tensor.shape.size();
    for (size_t i = 0; shape_ok && i < tensor.shape.size(); ++i) {
      shape_ok = shape->array[i].integer == tensor.shape[i];
    }
    Check(shape_ok, label + ": shape of '" + name + "'");
    const m3::json::Value* values = want.Find("values");
    bool values_ok = values && values->array.size() == tensor.data.size();
    size_t bad_index = 0;
    for (size_t i = 0; values_ok && i < tensor.data.size(); ++i) {
      if (!SameFloat(tensor.data[i], values->array[i])) {
        values_ok = false;
        bad_index = i;
      }
    }
    Check(values_ok, label + ": values of '" + name + "' (first mismatch at " + std::to_string(bad_index) + ")");
  }
}

void TestCases(const std::string& dir, const m3::json::Value& manifest) {
  for (const m3::json::Value& case_name : manifest.Find("cases")->array) {
    const std::string case_dir = dir + "/" + case_name.string;
    const m3::json::Value expected = m3::json::Parse(ReadText(case_dir + "/expected.json"), "expected.json");
    const std::string pt = case_dir + "/model.pt";
    const std::string st = case_dir + "/model.safetensors";
    try {
      CompareStateDict(m3::LoadTensorFile(pt), expected, case_name.string + " .pt via LoadTensorFile");
      CompareStateDict(m3::LoadTorchStateDict(pt), expected, case_name.string + " .pt via LoadTorchStateDict");
      CompareStateDict(m3::LoadTensorFile(st), expected, case_name.string + " .safetensors via LoadTensorFile");
      CompareStateDict(m3::LoadSafetensors(st), expected, case_name.string + " .safetensors via LoadSafetensors");
    } catch (const std::exception& error) {
      Check(false, case_name.string + ": unexpected exception: " + error.what());
    }
  }
}

void ExpectRefusal(const std::string& path, const std::vector<std::string>& contains) {
  try {
    m3::LoadTensorFile(path);
    Check(false, path + ": loaded but should be refused");
  } catch (const m3::CoreError& error) {
    const std::string message = error.what();
    bool ok = error.code() == "ERR_MODEL_FILES" && message.rfind(path + ": ", 0) == 0;
    for (const std::string& part : contains) ok = ok && message.find(part) != std::string::npos;
    Check(ok, path + ": refusal message: " + message);
  } catch (const std::exception& error) {
    Check(false, path + ": threw a non-CoreError: " + error.what());
  }
}

void TestRefusals(const std::string& dir, const m3::json::Value& manifest) {
  for (const m3::json::Value& refusal : manifest.Find("refusals")->array) {
    std::vector<std::string> contains;
    for (const m3::json::Value& part : refusal.Find("contains")->array) contains.push_back(part.string);
    ExpectRefusal(dir + "/" + refusal.Find("file")->string, contains);
  }
  ExpectRefusal(dir + "/does-not-exist.pt", {"file not found"});
  ExpectRefusal(dir + "/refuse", {"not a regular file"});
}

// ---- safetensors: tensors must tile the data section ----

// A .safetensors file with `header` as its JSON header and `data_size` bytes of data (0x3C00,
// fp16 1.0, repeated) so every well-formed case decodes to known values.
std::vector<uint8_t> SafetensorsBytes(const std::string& header, size_t data_size) {
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  bytes.insert(bytes.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_size; ++i) bytes.push_back(i % 2 ? 0x3C : 0x00);
  return bytes;
}

std::string TensorJson(const std::string& name, const std::string& shape, size_t begin, size_t end) {
  return "\"" + name + "\":{\"dtype\":\"F16\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

void ExpectSafetensorsRefused(const std::string& label, const std::string& header, size_t data_size,
                              const std::vector<std::string>& contains) {
  const std::string source = label + ".safetensors";
  try {
    m3::LoadSafetensorsFromBytes(SafetensorsBytes(header, data_size), source);
    Check(false, label + ": loaded but should be refused");
  } catch (const m3::CoreError& error) {
    const std::string message = error.what();
    bool ok = error.code() == "ERR_MODEL_FILES" && message.rfind(source + ": ", 0) == 0;
    for (const std::string& part : contains) ok = ok && message.find(part) != std::string::npos;
    Check(ok, label + ": refusal message: " + message);
  } catch (const std::exception& error) {
    Check(false, label + ": threw a non-CoreError: " + error.what());
  }
}

void TestSafetensorsTiling() {
  // Two tensors sharing bytes: the second aliases the first half of the first.
  ExpectSafetensorsRefused("overlap", "{" + TensorJson("weight", "[2]", 0, 4) + "," + TensorJson("bias", "[1]", 0, 2) + "}",
                           4, {"'bias' (data_offsets [0, 2])", "'weight' (data_offsets [0, 4])", "overlap"});
  ExpectSafetensorsRefused("overlap_middle", "{" + TensorJson("a", "[3]", 0, 6) + "," + TensorJson("b", "[3]", 4, 10) + "}",
                           10, {"'a'", "'b'", "overlap"});
  ExpectSafetensorsRefused("same_range", "{" + TensorJson("a", "[2]", 0, 4) + "," + TensorJson("b", "[2]", 0, 4) + "}",
                           4, {"'a'", "'b'", "overlap"});
  ExpectSafetensorsRefused("empty_inside", "{" + TensorJson("a", "[2]", 0, 4) + "," + TensorJson("z", "[0]", 2, 2) + "}",
                           4, {"'a'", "'z'", "overlap"});
  ExpectSafetensorsRefused("gap", "{" + TensorJson("a", "[1]", 0, 2) + "," + TensorJson("b", "[1]", 4, 6) + "}",
                           6, {"2 bytes", "between tensor 'a'", "tensor 'b'", "no tensor covers"});
  ExpectSafetensorsRefused("leading_gap", "{" + TensorJson("a", "[1]", 2, 4) + "}", 4,
                           {"2 bytes", "before tensor 'a'", "no tensor covers"});
  ExpectSafetensorsRefused("trailing_bytes", "{" + TensorJson("a", "[1]", 0, 2) + "}", 6,
                           {"4 bytes at the end", "after tensor 'a'"});
  ExpectSafetensorsRefused("no_tensors_but_data", "{}", 2, {"2 bytes at the end"});

  // Exact tilings load, whatever the header order, with empty tensors anywhere on the boundaries.
  try {
    const m3::StateDict tiled = m3::LoadSafetensorsFromBytes(
        SafetensorsBytes("{\"__metadata__\":{\"format\":\"pt\"}," + TensorJson("b", "[2]", 2, 6) + "," +
                             TensorJson("z0", "[0]", 0, 0) + "," + TensorJson("a", "[1]", 0, 2) + "," +
                             TensorJson("z1", "[2,0]", 2, 2) + "," + TensorJson("z2", "[0]", 6, 6) + "}",
                         6),
        "tiled.safetensors");
    Check(tiled.size() == 5 && tiled.at("a").data == std::vector<float>{1.0f} &&
              tiled.at("b").data == std::vector<float>{1.0f, 1.0f} && tiled.at("z1").data.empty(),
          "safetensors whose tensors tile the data section load");
    Check(m3::LoadSafetensorsFromBytes(SafetensorsBytes("{}", 0), "empty.safetensors").empty(),
          "safetensors with no tensors and no data load as an empty state dict");
  } catch (const std::exception& error) {
    Check(false, std::string("tiled safetensors: unexpected exception: ") + error.what());
  }
}

// ---- fuzzing ----

// Outcome of loading mutated bytes: loaded, refused with CoreError, or anything else (a bug).
enum class Outcome { kLoaded, kRefused, kBug };

Outcome TryLoad(const std::vector<uint8_t>& bytes, std::string* bug) {
  try {
    m3::LoadTensorFileFromBytes(bytes, "fuzz");
    return Outcome::kLoaded;
  } catch (const m3::CoreError& error) {
    if (error.code() == "ERR_MODEL_FILES") return Outcome::kRefused;
    *bug = std::string("wrong code ") + error.code();
  } catch (const std::exception& error) {
    *bug = std::string("non-CoreError exception: ") + error.what();
  }
  return Outcome::kBug;
}

// Writes a zip of stored entries, as torch.save does, so mutated pickles get valid CRCs and
// reach the unpickler instead of stopping at the CRC check. With `zip64`, every size and offset
// is saturated and given in ZIP64 extra fields and end records, as for archives above 4 GiB.
using ZipFiles = std::vector<std::pair<std::string, std::vector<uint8_t>>>;

std::vector<uint8_t> BuildStoredZip(const ZipFiles& files, bool zip64 = false) {
  std::vector<uint8_t> out, directory;
  auto put = [](std::vector<uint8_t>& to, uint64_t value, int width) {
    for (int i = 0; i < width; ++i) to.push_back(static_cast<uint8_t>(value >> (8 * i)));
  };
  const uint64_t saturated32 = 0xFFFFFFFFu;
  for (const auto& [name, data] : files) {
    const uint32_t crc = m3::Crc32(data.data(), data.size());
    const uint64_t offset = out.size();
    const uint64_t size32 = zip64 ? saturated32 : data.size();
    put(out, 0x04034b50, 4); put(out, 45, 2); put(out, 0, 2); put(out, 0, 2); put(out, 0, 4);
    put(out, crc, 4); put(out, size32, 4); put(out, size32, 4);
    put(out, name.size(), 2); put(out, zip64 ? 20 : 0, 2);
    out.insert(out.end(), name.begin(), name.end());
    if (zip64) {
      put(out, 1, 2); put(out, 16, 2); put(out, data.size(), 8); put(out, data.size(), 8);
    }
    out.insert(out.end(), data.begin(), data.end());
    put(directory, 0x02014b50, 4); put(directory, 45, 2); put(directory, 45, 2);
    put(directory, 0, 2); put(directory, 0, 2); put(directory, 0, 4); put(directory, crc, 4);
    put(directory, size32, 4); put(directory, size32, 4); put(directory, name.size(), 2);
    put(directory, zip64 ? 28 : 0, 2); put(directory, 0, 2); put(directory, 0, 2);
    put(directory, 0, 2); put(directory, 0, 4); put(directory, zip64 ? saturated32 : offset, 4);
    directory.insert(directory.end(), name.begin(), name.end());
    if (zip64) {
      put(directory, 1, 2); put(directory, 24, 2); put(directory, data.size(), 8);
      put(directory, data.size(), 8); put(directory, offset, 8);
    }
  }
  const uint64_t directory_offset = out.size();
  out.insert(out.end(), directory.begin(), directory.end());
  if (zip64) {
    const uint64_t record_offset = out.size();
    put(out, 0x06064b50, 4); put(out, 44, 8); put(out, 45, 2); put(out, 45, 2); put(out, 0, 4);
    put(out, 0, 4); put(out, files.size(), 8); put(out, files.size(), 8);
    put(out, directory.size(), 8); put(out, directory_offset, 8);
    put(out, 0x07064b50, 4); put(out, 0, 4); put(out, record_offset, 8); put(out, 1, 4);
  }
  put(out, 0x06054b50, 4); put(out, 0, 2); put(out, 0, 2);
  put(out, zip64 ? 0xFFFF : files.size(), 2); put(out, zip64 ? 0xFFFF : files.size(), 2);
  put(out, zip64 ? saturated32 : directory.size(), 4);
  put(out, zip64 ? saturated32 : directory_offset, 4); put(out, 0, 2);
  return out;
}

ZipFiles ReadZipFiles(const std::string& path, size_t* pickle_index) {
  const m3::ZipArchive archive = m3::ZipArchive::Open(path);
  ZipFiles files;
  for (const m3::ZipEntry& entry : archive.entries()) {
    const m3::ByteView view = archive.ReadStored(entry);
    const std::string suffix = "data.pkl";
    if (entry.name.size() >= suffix.size() &&
        entry.name.compare(entry.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      *pickle_index = files.size();
    }
    files.emplace_back(entry.name, std::vector<uint8_t>(view.data, view.data + view.size));
  }
  return files;
}

// The same archive rewritten with ZIP64 records must load to the same tensors.
void TestZip64(const std::string& dir) {
  const std::string path = dir + "/shared_storage/model.pt";
  size_t pickle_index = 0;
  const std::vector<uint8_t> zip64 = BuildStoredZip(ReadZipFiles(path, &pickle_index), true);
  try {
    const m3::StateDict expected = m3::LoadTorchStateDict(path);
    const m3::StateDict actual = m3::LoadTensorFileFromBytes(zip64, "zip64.pt");
    bool same = actual.size() == expected.size();
    for (const auto& [name, tensor] : expected) {
      const auto found = actual.find(name);
      same = same && found != actual.end() && found->second.shape == tensor.shape &&
             found->second.data == tensor.data;
    }
    Check(same, "ZIP64 archive loads the same tensors");
  } catch (const std::exception& error) {
    Check(false, std::string("ZIP64 archive: ") + error.what());
  }
  // A saturated EOCD without its ZIP64 locator must be refused, not read as 4 GiB offsets.
  std::vector<uint8_t> no_locator = zip64;
  const size_t eocd = no_locator.size() - 22;
  no_locator.erase(no_locator.begin() + static_cast<std::ptrdiff_t>(eocd - 20),
                   no_locator.begin() + static_cast<std::ptrdiff_t>(eocd));
  try {
    m3::LoadTensorFileFromBytes(no_locator, "zip64.pt");
    Check(false, "ZIP64 archive without locator is refused");
  } catch (const m3::CoreError& error) {
    Check(std::string(error.what()).find("no ZIP64 end-of-central-directory locator") !=
              std::string::npos,
          std::string("ZIP64 archive without locator: ") + error.what());
  }
}

// Pickles that stay small on disk but would grow without bound in memory are refused.
void TestLimits() {
  const size_t many = m3::RestrictedUnpickler::kMaxObjects + 10;
  auto refused_with = [](const std::vector<uint8_t>& pickle, const std::string& part) {
    const std::vector<uint8_t> zip = BuildStoredZip({{"archive/data.pkl", pickle}});
    try {
      m3::LoadTensorFileFromBytes(zip, "limits.pt");
    } catch (const m3::CoreError& error) {
      return std::string(error.what()).find(part) != std::string::npos;
    }
    return false;
  };
  std::vector<uint8_t> nones = {0x80, 2, ']'};  // appending keeps the stack short
  for (size_t i = 0; i < many; ++i) nones.insert(nones.end(), {'N', 'a'});
  nones.push_back('.');
  Check(refused_with(nones, "creates more than"), "pickle creating too many values is refused");
  std::vector<uint8_t> gets = {0x80, 2, 'N', 'q', 0};
  for (size_t i = 0; i < many; ++i) gets.insert(gets.end(), {'h', 0});
  gets.push_back('.');
  Check(refused_with(gets, "stack grows beyond"), "pickle growing the stack by BINGET is refused");
  std::vector<uint8_t> marks = {0x80, 2};
  marks.insert(marks.end(), many, '(');
  marks.push_back('.');
  Check(refused_with(marks, "stack grows beyond"), "pickle growing the stack by MARK is refused");
}

void FuzzBytes(const std::string& label, const std::vector<uint8_t>& valid, std::mt19937& rng, int flips) {
  int loaded = 0, refused = 0;
  std::string bug;
  for (size_t length = 0; length < valid.size() && bug.empty(); ++length) {
    const std::vector<uint8_t> truncated(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(length));
    const Outcome outcome = TryLoad(truncated, &bug);
    (outcome == Outcome::kLoaded ? loaded : refused)++;
    if (!bug.empty()) bug += " (truncated to " + std::to_string(length) + ")";
  }
  for (int i = 0; i < flips && bug.empty(); ++i) {
    std::vector<uint8_t> mutated = valid;
    const int count = 1 + static_cast<int>(rng() % 4);
    for (int j = 0; j < count; ++j) mutated[rng() % mutated.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    (TryLoad(mutated, &bug) == Outcome::kLoaded ? loaded : refused)++;
  }
  Check(bug.empty(), label + ": fuzzed input only loads or raises CoreError: " + bug);
  std::printf("  fuzz %-36s loaded %5d, refused %5d\n", label.c_str(), loaded, refused);
}

void FuzzPickle(const std::string& label, const std::string& pt_path, std::mt19937& rng,
                int iterations) {
  size_t pickle_index = 0;
  const ZipFiles files = ReadZipFiles(pt_path, &pickle_index);
  std::string rebuilt_error;
  Check(TryLoad(BuildStoredZip(files), &rebuilt_error) == Outcome::kLoaded,
        label + ": rebuilt archive loads " + rebuilt_error);
  // Mutations favour bytes that are pickle opcodes, so the machine sees unusual but valid ops.
  const uint8_t opcodes[] = {'(', '.', 'G', 'J', 'K', 'M', 'N', 'Q', 'R', 'T', 'U', 'X', 'a', 'b', 'c',
                             'd', '}', 'e', 'h', 'j', 'l', ']', 'q', 'r', 's', 't', ')', 'u', 0x80,
                             0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x8d, 0x93, 0x94, 0x95};
  const std::vector<uint8_t> original = files[pickle_index].second;
  int loaded = 0, refused = 0;
  std::string bug;
  for (int i = 0; i < iterations && bug.empty(); ++i) {
    std::vector<uint8_t> pickle = original;
    const int count = 1 + static_cast<int>(rng() % 3);
    for (int j = 0; j < count && !pickle.empty(); ++j) {
      const size_t at = rng() % pickle.size();
      switch (rng() % 4) {
        case 0: pickle[at] = opcodes[rng() % sizeof opcodes]; break;
        case 1: pickle[at] = static_cast<uint8_t>(rng()); break;
        case 2: pickle.insert(pickle.begin() + static_cast<std::ptrdiff_t>(at), opcodes[rng() % sizeof opcodes]); break;
        default: pickle.erase(pickle.begin() + static_cast<std::ptrdiff_t>(at)); break;
      }
    }
    auto mutated_files = files;
    mutated_files[pickle_index].second = std::move(pickle);
    (TryLoad(BuildStoredZip(mutated_files), &bug) == Outcome::kLoaded ? loaded : refused)++;
  }
  Check(bug.empty(), label + ": mutated pickles only load or raise CoreError: " + bug);
  std::printf("  fuzz %-36s loaded %5d, refused %5d\n", label.c_str(), loaded, refused);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "test/fixtures/weight-readers";
  const int scale = argc > 2 ? std::max(1, std::atoi(argv[2])) : 1;
  try {
    TestHalfConversion();
    TestJson();
    const m3::json::Value manifest = m3::json::Parse(ReadText(dir + "/manifest.json"), "manifest.json");
    TestCases(dir, manifest);
    TestRefusals(dir, manifest);
    TestZip64(dir);
    TestLimits();
    TestSafetensorsTiling();
    std::mt19937 rng(12345);
    const auto pt = m3::weights::ReadFileBytes(dir + "/fp16_linear/model.pt");
    const auto st = m3::weights::ReadFileBytes(dir + "/shared_storage/model.safetensors");
    FuzzBytes("fp16_linear/model.pt bytes", pt, rng, 3000 * scale);
    FuzzBytes("shared_storage/model.safetensors bytes", st, rng, 3000 * scale);
    size_t pickle_index = 0;
    const auto zip64 =
        BuildStoredZip(ReadZipFiles(dir + "/fp16_linear/model.pt", &pickle_index), true);
    FuzzBytes("fp16_linear as ZIP64 bytes", zip64, rng, 3000 * scale);
    FuzzPickle("shared_storage/model.pt pickle", dir + "/shared_storage/model.pt", rng, 6000 * scale);
    FuzzPickle("fp32_protocol4/model.pt pickle", dir + "/fp32_protocol4/model.pt", rng, 6000 * scale);
    FuzzPickle("hand_assembled/model.pt pickle", dir + "/hand_assembled/model.pt", rng, 6000 * scale);
  } catch (const std::exception& error) {
    Check(false, std::string("unexpected exception: ") + error.what());
  }
  std::printf("%d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
