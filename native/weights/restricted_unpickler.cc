// The opcode loop of the restricted pickle machine. Opcode semantics follow CPython's
// pickle.py (the reference for what each opcode pushes and pops); marks are kept as stack
// positions, and no pop may reach below the innermost mark, as with CPython's metastack.
#include "weights/restricted_unpickler.h"

#include <cstdio>
#include <cstring>

#include "base/error.h"

namespace m3 {
namespace {

using Kind = PickleValue::Kind;

constexpr size_t kMaxGlobalNameSize = 256;

// The opcodes this machine executes, named as in CPython's pickle module.
enum Opcode : uint8_t {
  MARK = '(', STOP = '.', BINFLOAT = 'G', BININT = 'J', BININT1 = 'K', BININT2 = 'M',
  NONE = 'N', BINPERSID = 'Q', REDUCE = 'R', BINSTRING = 'T', SHORT_BINSTRING = 'U',
  BINUNICODE = 'X', APPEND = 'a', BUILD = 'b', GLOBAL = 'c', DICT = 'd', EMPTY_DICT = '}',
  APPENDS = 'e', BINGET = 'h', LONG_BINGET = 'j', LIST = 'l', EMPTY_LIST = ']', BINPUT = 'q',
  LONG_BINPUT = 'r', SETITEM = 's', TUPLE = 't', EMPTY_TUPLE = ')', SETITEMS = 'u',
  PROTO = 0x80, TUPLE1 = 0x85, TUPLE2 = 0x86, TUPLE3 = 0x87, NEWTRUE = 0x88, NEWFALSE = 0x89,
  LONG1 = 0x8a, SHORT_BINUNICODE = 0x8c, BINUNICODE8 = 0x8d, STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94, FRAME = 0x95,
};

// Names of refused opcodes, so the error says what the file tried to do.
const char* RefusedOpcodeName(uint8_t op) {
  switch (op) {
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 0x81: return "NEWOBJ";
    case 0x92: return "NEWOBJ_EX";
    case 'P': return "PERSID";
    case 0x82: case 0x83: case 0x84: return "EXT";
    case 'I': return "INT";
    case 'L': return "LONG";
    case 0x8b: return "LONG4";
    case 'S': return "STRING";
    case 'V': return "UNICODE";
    case 'F': return "FLOAT";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'g': return "GET";
    case 'p': return "PUT";
    case 'B': case 'C': case 0x8e: return "BINBYTES";
    case 0x96: return "BYTEARRAY8";
    case 0x8f: case 0x90: case 0x91: return "set";
    case 0x97: case 0x98: return "out-of-band buffer";
    default: return "unknown";
  }
}

}  // namespace

const char RestrictedUnpickler::kRefusalAdvice[] =
    "only state dicts of tensors are accepted (like torch.load(weights_only=True)). Re-save it "
    "with torch.save(module.state_dict(), path)";

const char* PickleKindName(PickleValue::Kind kind) {
  switch (kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "a bool";
    case Kind::kInt: return "an int";
    case Kind::kFloat: return "a float";
    case Kind::kString: return "a string";
    case Kind::kTuple: return "a tuple";
    case Kind::kList: return "a list";
    case Kind::kDict: return "a dict";
    case Kind::kGlobal: return "a class or function";
    case Kind::kObject: return "an object";
  }
  return "unknown";
}

std::string PrintableName(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < 80; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
  }
  if (text.size() > 80) out += "...";
  return out;
}

RestrictedUnpickler::RestrictedUnpickler(const uint8_t* data, uint64_t size,
                                         std::string source_name, std::string pickle_name)
    : data_(data), size_(size), source_name_(std::move(source_name)),
      pickle_name_(std::move(pickle_name)) {}

void RestrictedUnpickler::Fail(const std::string& what) const {
  throw CoreError("ERR_MODEL_FILES", source_name_ + ": " + what);
}

void RestrictedUnpickler::Malformed(const std::string& what) const {
  Fail("pickle '" + pickle_name_ + "' is malformed at byte " + std::to_string(op_pos_) + " (" +
       what + "); the file is corrupted or not a torch.save() file, download it again");
}

void RestrictedUnpickler::Refuse(const std::string& what) const {
  Fail("pickle " + what + ", which is not allowed in a weights file; " + kRefusalAdvice);
}

const uint8_t* RestrictedUnpickler::Take(uint64_t count) {
  if (count > size_ - pos_) Malformed("truncated: an argument runs past the end");
  const uint8_t* start = data_ + pos_;
  pos_ += count;
  return start;
}

uint64_t RestrictedUnpickler::TakeLittleEndian(int width) {
  const uint8_t* bytes = Take(width);
  uint64_t value = 0;
  for (int i = width; i-- > 0;) value = (value << 8) | bytes[i];
  return value;
}

std::string RestrictedUnpickler::TakeString(uint64_t size) {
  const uint8_t* bytes = Take(size);
  return std::string(reinterpret_cast<const char*>(bytes), static_cast<size_t>(size));
}

std::string RestrictedUnpickler::TakeLine() {
  const uint64_t start = pos_;
  while (pos_ < size_ && data_[pos_] != '\n') {
    if (pos_ - start >= kMaxGlobalNameSize) Malformed("GLOBAL name too long");
    ++pos_;
  }
  if (pos_ >= size_) Malformed("GLOBAL name not terminated by a newline");
  std::string line(reinterpret_cast<const char*>(data_ + start), pos_ - start);
  ++pos_;
  return line;
}

PickleRef RestrictedUnpickler::NewValue(Kind kind) {
  if (++objects_created_ > kMaxObjects) {
    Fail("pickle creates more than " + std::to_string(kMaxObjects) +
         " objects, far more than any state dict; refusing it");
  }
  auto value = std::make_shared<PickleValue>();
  value->kind = kind;
  return value;
}

// Records that `child` is now stored inside `parent`. Freezing the child is what rules out
// cycles: closing one would need a container that is already stored somewhere to change.
void RestrictedUnpickler::Adopt(PickleValue& parent, const PickleRef& child) {
  if (child.get() == &parent) Malformed("a container stored inside itself");
  if (child->kind == Kind::kList || child->kind == Kind::kDict) child->frozen = true;
  if (child->depth + 1 > parent.depth) parent.depth = child->depth + 1;
  if (parent.depth > kMaxDepth) {
    Fail("pickle nests containers deeper than " + std::to_string(kMaxDepth) +
         " levels, which no state dict does; refusing it");
  }
}

PickleRef RestrictedUnpickler::MakeTuple(std::vector<PickleRef> items) {
  PickleRef tuple = NewValue(Kind::kTuple);
  for (const PickleRef& item : items) Adopt(*tuple, item);
  tuple->items = std::move(items);
  return tuple;
}

void RestrictedUnpickler::AddDictItems(PickleValue& dict, const std::vector<PickleRef>& flat) {
  if (flat.size() % 2 != 0) Malformed("odd number of items for a dict");
  for (size_t i = 0; i < flat.size(); i += 2) {
    Adopt(dict, flat[i]);
    Adopt(dict, flat[i + 1]);
    dict.entries.emplace_back(flat[i], flat[i + 1]);
  }
}

PickleValue& RestrictedUnpickler::MutableTop(Kind kind, const char* opcode_name) {
  PickleValue& target = *Top();
  if (target.kind != kind) {
    Malformed(std::string(opcode_name) + " on " + PickleKindName(target.kind));
  }
  if (target.frozen) {
    Malformed(std::string(opcode_name) + " on a container already stored elsewhere");
  }
  return target;
}

const PickleRef& RestrictedUnpickler::Top() const {
  if (stack_.size() <= (marks_.empty() ? 0 : marks_.back())) Malformed("stack underflow");
  return stack_.back();
}

PickleRef RestrictedUnpickler::Pop() {
  PickleRef value = Top();
  stack_.pop_back();
  return value;
}

std::vector<PickleRef> RestrictedUnpickler::PopToMark() {
  if (marks_.empty()) Malformed("no MARK to pop to");
  const size_t mark = marks_.back();
  marks_.pop_back();
  std::vector<PickleRef> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
  stack_.resize(mark);
  return items;
}

PickleRef RestrictedUnpickler::Run() {
  while (!stopped_) {
    if (pos_ >= size_) Malformed("ends without a STOP opcode");
    op_pos_ = pos_;
    Step(*Take(1));
  }
  if (stack_.size() != 1 || !marks_.empty()) Malformed("STOP with leftover stack items or marks");
  return stack_.back();
}

void RestrictedUnpickler::Step(uint8_t op) {
  // BINGET and MARK grow the stack without creating values, so the stack has its own cap.
  if (stack_.size() + marks_.size() >= kMaxObjects) {
    Fail("pickle stack grows beyond " + std::to_string(kMaxObjects) +
         " entries, far more than any state dict needs; refusing it");
  }
  auto push = [this](PickleRef value) { stack_.push_back(std::move(value)); };
  auto push_int = [&](int64_t integer, Kind kind) {
    PickleRef value = NewValue(kind);
    value->integer = integer;
    push(std::move(value));
  };
  auto push_string = [&](std::string text) {
    PickleRef value = NewValue(Kind::kString);
    value->text = std::move(text);
    push(std::move(value));
  };
  switch (op) {
    case PROTO: {
      const uint8_t version = *Take(1);
      if (version > 5) {
        Fail("pickle protocol " + std::to_string(version) +
             " is newer than 5, the newest supported");
      }
      return;
    }
    case FRAME:  // framing only groups opcodes for buffered reading; the content is unchanged
      if (TakeLittleEndian(8) > size_ - pos_) Malformed("FRAME longer than the pickle");
      return;
    case MARK: marks_.push_back(stack_.size()); return;
    case STOP: stopped_ = true; return;
    case NONE: push(NewValue(Kind::kNone)); return;
    case NEWTRUE: push_int(1, Kind::kBool); return;
    case NEWFALSE: push_int(0, Kind::kBool); return;
    case BININT: push_int(static_cast<int32_t>(TakeLittleEndian(4)), Kind::kInt); return;
    case BININT1: push_int(static_cast<int64_t>(TakeLittleEndian(1)), Kind::kInt); return;
    case BININT2: push_int(static_cast<int64_t>(TakeLittleEndian(2)), Kind::kInt); return;
    case LONG1: {
      const int width = *Take(1);
      if (width > 8) Malformed("integer wider than 64 bits");
      uint64_t bits = width == 0 ? 0 : TakeLittleEndian(width);
      const bool negative = width > 0 && width < 8 && (bits >> (8 * width - 1)) != 0;
      if (negative) bits |= ~uint64_t{0} << (8 * width);  // sign-extend two's complement
      push_int(static_cast<int64_t>(bits), Kind::kInt);
      return;
    }
    case BINFLOAT: {
      const uint8_t* bytes = Take(8);
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | bytes[i];  // big-endian, unlike the rest
      PickleRef value = NewValue(Kind::kFloat);
      std::memcpy(&value->real, &bits, sizeof bits);
      push(std::move(value));
      return;
    }
    case SHORT_BINUNICODE:
    case SHORT_BINSTRING: push_string(TakeString(TakeLittleEndian(1))); return;
    case BINUNICODE: push_string(TakeString(TakeLittleEndian(4))); return;
    case BINUNICODE8: push_string(TakeString(TakeLittleEndian(8))); return;
    case BINSTRING: {
      const int32_t size = static_cast<int32_t>(TakeLittleEndian(4));
      if (size < 0) Malformed("negative BINSTRING length");
      push_string(TakeString(static_cast<uint64_t>(size)));
      return;
    }
    case GLOBAL: {
      const std::string module = TakeLine();
      const std::string name = TakeLine();
      push(ResolveGlobal(module, name));
      return;
    }
    case STACK_GLOBAL: {
      const PickleRef name = Pop();
      const PickleRef module = Pop();
      if (name->kind != Kind::kString || module->kind != Kind::kString) {
        Malformed("STACK_GLOBAL of non-strings");
      }
      push(ResolveGlobal(module->text, name->text));
      return;
    }
    case MEMOIZE: memo_[memo_.size()] = Top(); return;
    case BINPUT: memo_[TakeLittleEndian(1)] = Top(); return;
    case LONG_BINPUT: memo_[TakeLittleEndian(4)] = Top(); return;
    case BINGET:
    case LONG_BINGET: {
      const auto found = memo_.find(TakeLittleEndian(op == BINGET ? 1 : 4));
      if (found == memo_.end()) Malformed("memo lookup of a key never stored");
      push(found->second);
      return;
    }
    case EMPTY_TUPLE: push(MakeTuple({})); return;
    case TUPLE: push(MakeTuple(PopToMark())); return;
    case TUPLE1:
    case TUPLE2:
    case TUPLE3: {
      std::vector<PickleRef> items(op - TUPLE1 + 1);
      for (size_t i = items.size(); i-- > 0;) items[i] = Pop();
      push(MakeTuple(std::move(items)));
      return;
    }
    case EMPTY_LIST: push(NewValue(Kind::kList)); return;
    case LIST: {
      PickleRef list = NewValue(Kind::kList);
      for (PickleRef& item : PopToMark()) {
        Adopt(*list, item);
        list->items.push_back(std::move(item));
      }
      push(std::move(list));
      return;
    }
    case APPEND: {
      PickleRef item = Pop();
      PickleValue& list = MutableTop(Kind::kList, "APPEND");
      Adopt(list, item);
      list.items.push_back(std::move(item));
      return;
    }
    case APPENDS: {
      std::vector<PickleRef> items = PopToMark();
      PickleValue& list = MutableTop(Kind::kList, "APPENDS");
      for (PickleRef& item : items) {
        Adopt(list, item);
        list.items.push_back(std::move(item));
      }
      return;
    }
    case EMPTY_DICT: push(NewValue(Kind::kDict)); return;
    case DICT: {
      PickleRef dict = NewValue(Kind::kDict);
      AddDictItems(*dict, PopToMark());
      push(std::move(dict));
      return;
    }
    case SETITEM: {
      PickleRef value = Pop();
      PickleRef key = Pop();
      AddDictItems(MutableTop(Kind::kDict, "SETITEM"), {key, value});
      return;
    }
    case SETITEMS: {
      const std::vector<PickleRef> items = PopToMark();
      AddDictItems(MutableTop(Kind::kDict, "SETITEMS"), items);
      return;
    }
    case REDUCE: {
      PickleRef arguments = Pop();
      PickleRef callable = Pop();
      if (callable->kind != Kind::kGlobal) {
        Refuse("calls " + std::string(PickleKindName(callable->kind)) +
               " (REDUCE on a non-callable)");
      }
      if (arguments->kind != Kind::kTuple) Malformed("REDUCE arguments are not a tuple");
      push(Reduce(callable, arguments));
      return;
    }
    case BUILD: {
      // A state dict's own attributes (its _metadata) carry nothing the readers use, and only
      // dicts may receive state: on anything else BUILD would mean running __setstate__.
      Pop();
      if (Top()->kind != Kind::kDict) {
        Refuse("sets the state of " + std::string(PickleKindName(Top()->kind)) + " (BUILD)");
      }
      return;
    }
    case BINPERSID: {
      const PickleRef pid = Pop();
      push(PersistentLoad(pid));
      return;
    }
    default: {
      char code[8];
      std::snprintf(code, sizeof code, "0x%02x", op);
      Refuse(std::string("uses opcode ") + RefusedOpcodeName(op) + " (" + code + ") at byte " +
             std::to_string(op_pos_));
    }
  }
}

}  // namespace m3
