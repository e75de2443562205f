// Recursive-descent JSON parser; recursion is bounded by kMaxDepth so hostile input cannot
// exhaust the stack.
#include "weights/mini_json.h"

#include <charconv>

#include "base/error.h"

namespace m3 {
namespace json {

const Value* Value::Find(std::string_view key) const {
  if (type != Type::kObject) return nullptr;
  for (const auto& member : object) {
    if (member.first == key) return &member.second;
  }
  return nullptr;
}

const char* TypeName(Value::Type type) {
  switch (type) {
    case Value::Type::kNull:
      return "null";
    case Value::Type::kBool:
      return "boolean";
    case Value::Type::kNumber:
      return "number";
    case Value::Type::kString:
      return "string";
    case Value::Type::kArray:
      return "array";
    case Value::Type::kObject:
      return "object";
  }
  return "unknown";
}

namespace {

class Parser {
 public:
  Parser(std::string_view text, const std::string& source_name)
      : text_(text), source_name_(source_name) {}

  Value ParseDocument() {
    SkipWhitespace();
    Value value = ParseValue(0);
    SkipWhitespace();
    if (pos_ != text_.size()) Fail("unexpected data after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) const {
    throw CoreError("ERR_MODEL_FILES", source_name_ + ": invalid JSON at byte " +
                                           std::to_string(pos_) + ": " + what);
  }

  bool AtEnd() const { return pos_ >= text_.size(); }
  char Peek() const { return AtEnd() ? '\0' : text_[pos_]; }

  void SkipWhitespace() {
    while (!AtEnd() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' ||
                        text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  void Expect(char wanted) {
    if (Peek() != wanted || AtEnd()) Fail(std::string("expected '") + wanted + "'");
    ++pos_;
  }

  void ExpectWord(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) Fail("unknown literal");
    pos_ += word.size();
  }

  Value ParseValue(int depth) {
    if (AtEnd()) Fail("unexpected end of input");
    Value value;
    switch (Peek()) {
      case '{':
        return ParseObject(depth + 1);
      case '[':
        return ParseArray(depth + 1);
      case '"':
        value.type = Value::Type::kString;
        value.string = ParseString();
        return value;
      case 't':
        ExpectWord("true");
        value.type = Value::Type::kBool;
        value.boolean = true;
        return value;
      case 'f':
        ExpectWord("false");
        value.type = Value::Type::kBool;
        return value;
      case 'n':
        ExpectWord("null");
        return value;
      default:
        return ParseNumber();
    }
  }

  Value ParseObject(int depth) {
    if (depth > kMaxDepth) Fail("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
    Expect('{');
    Value value;
    value.type = Value::Type::kObject;
    SkipWhitespace();
    if (Peek() == '}') {
      ++pos_;
      return value;
    }
    while (true) {
      SkipWhitespace();
      if (Peek() != '"') Fail("expected a string key");
      const size_t key_pos = pos_;
      std::string key = ParseString();
      if (value.Find(key) != nullptr) {
        pos_ = key_pos;
        Fail("duplicate key \"" + key + "\"");
      }
      SkipWhitespace();
      Expect(':');
      SkipWhitespace();
      Value member = ParseValue(depth);
      value.object.emplace_back(std::move(key), std::move(member));
      SkipWhitespace();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      Expect('}');
      return value;
    }
  }

  Value ParseArray(int depth) {
    if (depth > kMaxDepth) Fail("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
    Expect('[');
    Value value;
    value.type = Value::Type::kArray;
    SkipWhitespace();
    if (Peek() == ']') {
      ++pos_;
      return value;
    }
    while (true) {
      SkipWhitespace();
      value.array.push_back(ParseValue(depth));
      SkipWhitespace();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      Expect(']');
      return value;
    }
  }

  unsigned ParseHex4() {
    if (text_.size() - pos_ < 4) Fail("truncated \\u escape");
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      code <<= 4;
      if (c >= '0' && c <= '9') code |= c - '0';
      else if (c >= 'a' && c <= 'f') code |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') code |= c - 'A' + 10;
      else Fail("invalid hex digit in \\u escape");
    }
    return code;
  }

  static void AppendUtf8(std::string* out, unsigned code) {
    if (code < 0x80) {
      out->push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (code >> 6)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (code >> 12)));
      out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (code >> 18)));
      out->push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
  }

  std::string ParseString() {
    Expect('"');
    std::string out;
    while (true) {
      if (AtEnd()) Fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) Fail("raw control character in string (must be escaped)");
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      ++pos_;
      if (AtEnd()) Fail("unterminated escape");
      const char escape = text_[pos_++];
      switch (escape) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          unsigned code = ParseHex4();
          if (code >= 0xDC00 && code <= 0xDFFF) Fail("lone low surrogate in \\u escape");
          if (code >= 0xD800 && code <= 0xDBFF) {
            // UTF-16 surrogate pair: the high half must be followed by an escaped low half.
            if (text_.substr(pos_, 2) != "\\u") Fail("high surrogate not followed by a low one");
            pos_ += 2;
            const unsigned low = ParseHex4();
            if (low < 0xDC00 || low > 0xDFFF) Fail("high surrogate not followed by a low one");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          AppendUtf8(&out, code);
          break;
        }
        default:
          Fail(std::string("invalid escape '\\") + escape + "'");
      }
    }
  }

  Value ParseNumber() {
    const size_t start = pos_;
    bool integral = true;
    if (Peek() == '-') ++pos_;
    auto digits = [&]() {
      const size_t first = pos_;
      while (!AtEnd() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ - first;
    };
    if (Peek() == '0') {
      ++pos_;
    } else if (digits() == 0) {
      pos_ = start;
      Fail("expected a value");
    }
    if (Peek() == '.') {
      integral = false;
      ++pos_;
      if (digits() == 0) Fail("expected digits after the decimal point");
    }
    if (Peek() == 'e' || Peek() == 'E') {
      integral = false;
      ++pos_;
      if (Peek() == '+' || Peek() == '-') ++pos_;
      if (digits() == 0) Fail("expected digits in the exponent");
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    Value value;
    value.type = Value::Type::kNumber;
    // from_chars is locale-independent, unlike strtod, which a host app's setlocale can change.
    const auto parsed = std::from_chars(first, last, value.number);
    if (parsed.ec != std::errc() || parsed.ptr != last) {
      pos_ = start;
      Fail("number out of range");
    }
    if (integral) {
      const auto exact = std::from_chars(first, last, value.integer);
      value.is_integer = exact.ec == std::errc() && exact.ptr == last;
      if (!value.is_integer) value.integer = 0;
    }
    return value;
  }

  std::string_view text_;
  const std::string& source_name_;
  size_t pos_ = 0;
};

}  // namespace

Value Parse(std::string_view text, const std::string& source_name) {
  return Parser(text, source_name).ParseDocument();
}

}  // namespace json
}  // namespace m3
