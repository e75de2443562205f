// Errors raised by the pure C++ core. The binding maps them to JS `M3Error`s with the same code.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace m3 {

/// An error with a stable machine-readable code (the same strings the JS `M3Error.code` uses:
/// ERR_MODEL_FILES, ERR_MODEL_LAYOUT, ERR_INPUT, ERR_ABORTED, ERR_DISPOSED, ERR_DEVICE, ERR_RUNTIME)
/// and a message that names the file, argument or limit and what to do about it.
class CoreError : public std::runtime_error {
 public:
  CoreError(std::string code, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)) {}
  const std::string& code() const noexcept { return code_; }

 private:
  std::string code_;
};

/// "a, b, c" (or "none"): a list of names as error messages give it.
inline std::string JoinNames(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s.empty() ? "none" : s;
}

/// "[2, 3, 1024]": a tensor shape as error messages give it.
inline std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace m3
