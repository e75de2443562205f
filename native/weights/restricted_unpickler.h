// A restricted pickle machine: it executes the data-building subset of pickle protocols 2-5
// and nothing else. It never imports or calls anything; what a GLOBAL names, what REDUCE
// builds and what a persistent id loads are decided by a subclass, which sees only inert
// values. Everything else (INST, OBJ, NEWOBJ, EXT*, sets, buffers, ...) is refused.
//
// Input is untrusted, so resources are bounded: at most kMaxObjects values (and as many stack
// entries), containers nested at most kMaxDepth deep, and a list or dict may not change once
// stored inside another value. That last rule makes reference cycles impossible, so values
// free without leaks and with bounded recursion.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace m3 {

struct PickleValue;
using PickleRef = std::shared_ptr<PickleValue>;

/// A value on the pickle stack. Only the fields of its kind are meaningful.
struct PickleValue {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kObject };

  Kind kind = Kind::kNone;
  bool frozen = false;  // a list/dict stored inside another value; further changes are refused
  int depth = 0;        // container nesting below this value
  int64_t integer = 0;  // kInt, kBool
  double real = 0.0;    // kFloat
  std::string text;     // kString; the qualified name ("module.name") of a kGlobal
  int tag = 0;          // kGlobal, kObject: meaning chosen by the subclass
  std::vector<PickleRef> items;                          // kTuple, kList
  std::vector<std::pair<PickleRef, PickleRef>> entries;  // kDict, in insertion order
  std::shared_ptr<const void> object;                    // kObject payload owned by the subclass
};

/// Article and name of a value kind for messages ("a list", "an int", "None").
const char* PickleKindName(PickleValue::Kind kind);

class RestrictedUnpickler {
 public:
  static constexpr int kMaxDepth = 64;
  /// Cap on values created and on stack entries plus marks (a state dict needs ~20 per tensor).
  static constexpr uint64_t kMaxObjects = 1u << 18;

  /// Prepares to run the pickle in `data[0..size)`, which must stay alive during Run().
  /// `source_name` (the file) starts every error message; `pickle_name` names the pickle
  /// inside it (e.g. the zip entry) in messages about malformed input.
  RestrictedUnpickler(const uint8_t* data, uint64_t size, std::string source_name,
                      std::string pickle_name);
  virtual ~RestrictedUnpickler() = default;

  /// Executes the pickle up to STOP and returns the single value left on the stack. Throws
  /// CoreError("ERR_MODEL_FILES") for malformed input, refused opcodes and exceeded limits,
  /// and whatever the subclass hooks throw.
  PickleRef Run();

 protected:
  /// GLOBAL / STACK_GLOBAL: return an inert kGlobal value for an allowed name, or Refuse().
  virtual PickleRef ResolveGlobal(const std::string& module, const std::string& name) = 0;

  /// REDUCE: `callable` is a kGlobal from ResolveGlobal, `arguments` a tuple.
  virtual PickleRef Reduce(const PickleRef& callable, const PickleRef& arguments) = 0;

  /// BINPERSID: turn a persistent id (already unpickled) into a value.
  virtual PickleRef PersistentLoad(const PickleRef& pid) = 0;

  /// A new value of `kind`, counted against kMaxObjects.
  PickleRef NewValue(PickleValue::Kind kind);

  /// Throws CoreError("ERR_MODEL_FILES"): "<source>: <what>".
  [[noreturn]] void Fail(const std::string& what) const;

  /// Throws for a pickle that is structurally broken, naming the byte offset of the opcode.
  [[noreturn]] void Malformed(const std::string& what) const;

  /// Throws for a pickle that asks for something a weights file must not contain.
  [[noreturn]] void Refuse(const std::string& what) const;

  /// Text appended to refusals: what is accepted and how to re-save the file.
  static const char kRefusalAdvice[];

 private:
  const uint8_t* Take(uint64_t count);
  uint64_t TakeLittleEndian(int width);
  std::string TakeString(uint64_t size);
  std::string TakeLine();

  void Adopt(PickleValue& parent, const PickleRef& child);
  PickleRef MakeTuple(std::vector<PickleRef> items);
  void AddDictItems(PickleValue& dict, const std::vector<PickleRef>& flat);
  PickleValue& MutableTop(PickleValue::Kind kind, const char* opcode_name);

  const PickleRef& Top() const;
  PickleRef Pop();
  std::vector<PickleRef> PopToMark();
  void Step(uint8_t op);

  const uint8_t* data_;
  uint64_t size_;
  std::string source_name_;
  std::string pickle_name_;
  uint64_t pos_ = 0;
  uint64_t op_pos_ = 0;
  bool stopped_ = false;
  uint64_t objects_created_ = 0;
  std::vector<PickleRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleRef> memo_;
};

/// Makes a name taken from a file printable and short enough for an error message.
std::string PrintableName(const std::string& text);

}  // namespace m3
