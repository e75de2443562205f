// A small strict JSON (RFC 8259) parser for the few JSON documents the core reads itself, such
// as .safetensors headers. Input is untrusted: nesting depth is capped, numbers are parsed
// locale-independently, and any deviation from the grammar is an error with a byte offset.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace m3 {
namespace json {

/// A parsed JSON value. Objects keep their members in document order (duplicate keys are
/// refused at parse time, so lookups are unambiguous).
struct Value {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Type type = Type::kNull;
  bool boolean = false;
  double number = 0.0;
  /// True when the number was written without fraction or exponent and fits in int64; then
  /// `integer` holds it exactly (a double would lose precision above 2^53).
  bool is_integer = false;
  int64_t integer = 0;
  std::string string;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;

  /// The member named `key` of an object, or nullptr (also when this is not an object).
  const Value* Find(std::string_view key) const;
};

/// Name of a type for error messages ("null", "boolean", "number", "string", "array", "object").
const char* TypeName(Value::Type type);

/// Deepest array/object nesting Parse accepts; deeper input is refused, not recursed into.
constexpr int kMaxDepth = 64;

/// Parses exactly one JSON value surrounded by optional whitespace. Throws
/// CoreError("ERR_MODEL_FILES") whose message starts with `source_name` and gives the byte
/// offset and what was expected, for malformed input, invalid escapes or lone surrogates.
Value Parse(std::string_view text, const std::string& source_name);

}  // namespace json
}  // namespace m3
