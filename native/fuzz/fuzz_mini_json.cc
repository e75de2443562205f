// Fuzz target: the strict JSON parser. A document it accepts is written back out and parsed
// again, which must give the same value: the parser and the grammar it claims agree, for
// escapes, surrogates, numbers and nesting. Seeds: JSON from test/fixtures and hand-written
// edge cases.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "weights/mini_json.h"
#include "fuzz/fuzz_support.h"

namespace {

using m3::json::Value;

void WriteString(const std::string& text, std::string& out) {
  out.push_back('"');
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (byte < 0x20) {
      char escape[8];
      std::snprintf(escape, sizeof escape, "\\u%04x", byte);
      out += escape;
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

void Write(const Value& value, std::string& out) {
  switch (value.type) {
    case Value::Type::kNull: out += "null"; break;
    case Value::Type::kBool: out += value.boolean ? "true" : "false"; break;
    case Value::Type::kNumber: {
      char digits[64];
      // Shortest round-trip form: from_chars reads back exactly the same double.
      const auto written = value.is_integer ? std::to_chars(digits, digits + sizeof digits, value.integer)
                                            : std::to_chars(digits, digits + sizeof digits, value.number);
      out.append(digits, written.ptr);
      break;
    }
    case Value::Type::kString: WriteString(value.string, out); break;
    case Value::Type::kArray:
      out.push_back('[');
      for (size_t i = 0; i < value.array.size(); ++i) {
        if (i) out.push_back(',');
        Write(value.array[i], out);
      }
      out.push_back(']');
      break;
    case Value::Type::kObject:
      out.push_back('{');
      for (size_t i = 0; i < value.object.size(); ++i) {
        if (i) out.push_back(',');
        WriteString(value.object[i].first, out);
        out.push_back(':');
        Write(value.object[i].second, out);
      }
      out.push_back('}');
      break;
  }
}

// Same value: numbers compare by value (so -0 and 0 written as an integer agree), and an
// integer stays an integer; a fraction may come back as an integer when it is whole.
bool Same(const Value& a, const Value& b) {
  if (a.type != b.type) return false;
  switch (a.type) {
    case Value::Type::kNull: return true;
    case Value::Type::kBool: return a.boolean == b.boolean;
    case Value::Type::kNumber:
      return a.number == b.number && (!a.is_integer || (b.is_integer && a.integer == b.integer));
    case Value::Type::kString: return a.string == b.string;
    case Value::Type::kArray:
      if (a.array.size() != b.array.size()) return false;
      for (size_t i = 0; i < a.array.size(); ++i)
        if (!Same(a.array[i], b.array[i])) return false;
      return true;
    case Value::Type::kObject:
      if (a.object.size() != b.object.size()) return false;
      for (size_t i = 0; i < a.object.size(); ++i)
        if (a.object[i].first != b.object[i].first || !Same(a.object[i].second, b.object[i].second)) return false;
      return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  return m3::fuzz::RunCase("ERR_MODEL_FILES", [&] {
    const Value value = m3::json::Parse(text, "fuzz.json");
    std::string written;
    Write(value, written);
    Value again;
    try {
      again = m3::json::Parse(written, "rewritten.json");
    } catch (const m3::CoreError& error) {
      m3::fuzz::Finding("an accepted document, written back out, is refused: " + std::string(error.what()) +
                        "\n  written: " + written.substr(0, 200));
    }
    m3::fuzz::Require(Same(value, again), "an accepted document parses to a different value when written "
                                          "back out: " + written.substr(0, 200));
  });
}
