// The encoder's output kinds: the one table of them. The binding turns the names JavaScript
// passes into an OutputSet once, at the call; the encoder, its heads and the result read the set.
#pragma once
#include <cstdint>
#include <string>

namespace m3 {

enum class OutputKind : uint32_t {
  kDense,    // the normalised CLS vector
  kSparse,   // lexical weights: ReLU head, max per token id
  kColbert,  // projected, normalised token vectors (every token after CLS)
  kHidden,   // last_hidden_state rows (BAAI layout; for fine-tuning the heads)
};

struct OutputKindInfo {
  OutputKind kind;
  const char* name;  // as JavaScript names it
  bool public_api;   // an output of BGEM3.encode (kHidden is internal to fine-tuning)
};

inline constexpr OutputKindInfo kOutputKinds[] = {
    {OutputKind::kDense, "dense", true},
    {OutputKind::kSparse, "sparse", true},
    {OutputKind::kColbert, "colbert", true},
    {OutputKind::kHidden, "hidden", false},
};

/// Finds a kind by its JavaScript name; false for an unknown name.
inline bool FindOutputKind(const std::string& name, OutputKind* kind) {
  for (const auto& k : kOutputKinds) {
    if (name == k.name) {
      *kind = k.kind;
      return true;
    }
  }
  return false;
}

/// A set of output kinds.
class OutputSet {
 public:
  OutputSet() = default;
  OutputSet(std::initializer_list<OutputKind> kinds) {
    for (OutputKind k : kinds) add(k);
  }
  void add(OutputKind k) { bits_ |= Bit(k); }
  bool has(OutputKind k) const { return (bits_ & Bit(k)) != 0; }
  bool dense() const { return has(OutputKind::kDense); }
  bool sparse() const { return has(OutputKind::kSparse); }
  bool colbert() const { return has(OutputKind::kColbert); }
  bool hidden() const { return has(OutputKind::kHidden); }

 private:
  static uint32_t Bit(OutputKind k) { return 1u << static_cast<uint32_t>(k); }
  uint32_t bits_ = 0;
};

}  // namespace m3
