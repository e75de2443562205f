// torch.save() archive reader: finds the pickle and storages in the zip, and gives the
// restricted unpickler torch's meaning for an allow-list of globals. Nothing from the file is
// ever imported or called; storages and tensors are plain data built here.
#include "weights/torch_pickle_reader.h"

#include <memory>
#include <unordered_map>
#include <utility>

#include "base/error.h"
#include "weights/restricted_unpickler.h"
#include "weights/zip_reader.h"

namespace m3 {
namespace {

using Kind = PickleValue::Kind;
using weights::ScalarType;

constexpr size_t kMaxDimensions = 64;

// What an allowed global is. Storage classes and dtypes only describe element types; the
// callables are interpreted by Reduce().
enum class Global {
  kOrderedDict,
  kRebuildTensor,
  kRebuildTensorV2,
  kRebuildTensorV3,
  kRebuildParameter,
  kRebuildParameterWithState,
  kTypedStorageClass,
  kUntypedStorageClass,
  kDtype,
};

struct AllowedGlobal {
  const char* qualified_name;
  Global global;
  ScalarType type;
};

// The index into this table is the PickleValue tag of a resolved global.
constexpr AllowedGlobal kAllowedGlobals[] = {
    {"collections.OrderedDict", Global::kOrderedDict, ScalarType::kFloat32},
    {"torch._utils._rebuild_tensor", Global::kRebuildTensor, ScalarType::kFloat32},
    {"torch._utils._rebuild_tensor_v2", Global::kRebuildTensorV2, ScalarType::kFloat32},
    {"torch._utils._rebuild_tensor_v3", Global::kRebuildTensorV3, ScalarType::kFloat32},
    {"torch._utils._rebuild_parameter", Global::kRebuildParameter, ScalarType::kFloat32},
    {"torch._utils._rebuild_parameter_with_state", Global::kRebuildParameterWithState,
     ScalarType::kFloat32},
    {"torch.HalfStorage", Global::kTypedStorageClass, ScalarType::kFloat16},
    {"torch.BFloat16Storage", Global::kTypedStorageClass, ScalarType::kBFloat16},
    {"torch.FloatStorage", Global::kTypedStorageClass, ScalarType::kFloat32},
    {"torch.DoubleStorage", Global::kTypedStorageClass, ScalarType::kFloat64},
    {"torch.UntypedStorage", Global::kUntypedStorageClass, ScalarType::kFloat32},
    {"torch.storage.UntypedStorage", Global::kUntypedStorageClass, ScalarType::kFloat32},
    {"torch.float16", Global::kDtype, ScalarType::kFloat16},
    {"torch.half", Global::kDtype, ScalarType::kFloat16},
    {"torch.bfloat16", Global::kDtype, ScalarType::kBFloat16},
    {"torch.float32", Global::kDtype, ScalarType::kFloat32},
    {"torch.float", Global::kDtype, ScalarType::kFloat32},
    {"torch.float64", Global::kDtype, ScalarType::kFloat64},
    {"torch.double", Global::kDtype, ScalarType::kFloat64},
};

// Tags of the kObject values this reader creates.
enum ObjectTag : int { kStorageTag = 1, kTensorTag = 2 };

// The bytes of one storage entry. Untyped storages (plain bytes) get their element type from
// the tensor viewing them (_rebuild_tensor_v3's dtype argument).
struct Storage {
  std::string key;
  bool typed = true;
  ScalarType type = ScalarType::kFloat32;
  ByteView bytes;
};

bool IsObject(const PickleValue& value, ObjectTag tag) {
  return value.kind == Kind::kObject && value.tag == tag;
}

const AllowedGlobal* GlobalOf(const PickleValue& value) {
  return value.kind == Kind::kGlobal ? &kAllowedGlobals[value.tag] : nullptr;
}

class StateDictUnpickler : public RestrictedUnpickler {
 public:
  StateDictUnpickler(const ZipArchive& archive, const std::string& prefix, ByteView pickle)
      : RestrictedUnpickler(pickle.data, pickle.size, archive.source_name(), prefix + "data.pkl"),
        archive_(archive),
        prefix_(prefix),
        budget_left_(weights::OutputElementBudget(archive.size())) {}

  /// Runs the pickle and checks that it built a dict of name -> tensor.
  StateDict Load();

 protected:
  PickleRef ResolveGlobal(const std::string& module, const std::string& name) override;
  PickleRef Reduce(const PickleRef& callable, const PickleRef& arguments) override;
  PickleRef PersistentLoad(const PickleRef& pid) override;

 private:
  PickleRef RebuildTensor(const std::vector<PickleRef>& args, const AllowedGlobal* dtype);
  std::vector<int64_t> ReadSizes(const PickleValue& value, const char* what) const;

  const ZipArchive& archive_;
  std::string prefix_;
  uint64_t budget_left_;
  std::unordered_map<std::string, ByteView> storage_bytes_;  // CRC-checked once per key
};

PickleRef StateDictUnpickler::ResolveGlobal(const std::string& module, const std::string& name) {
  const std::string qualified = module + "." + name;
  for (size_t i = 0; i < sizeof kAllowedGlobals / sizeof kAllowedGlobals[0]; ++i) {
    if (qualified == kAllowedGlobals[i].qualified_name) {
      PickleRef value = NewValue(Kind::kGlobal);
      value->text = qualified;
      value->tag = static_cast<int>(i);
      return value;
    }
  }
  Refuse("refers to global '" + PrintableName(qualified) + "'");
}

PickleRef StateDictUnpickler::Reduce(const PickleRef& callable, const PickleRef& arguments) {
  const std::vector<PickleRef>& args = arguments->items;
  const std::string& name = callable->text;
  auto require_arity = [&](size_t low, size_t high) {
    if (args.size() < low || args.size() > high) {
      Malformed(name + " called with " + std::to_string(args.size()) + " arguments");
    }
  };
  switch (GlobalOf(*callable)->global) {
    case Global::kOrderedDict:
      require_arity(0, 0);  // state dicts are built empty and filled by SETITEMS
      return NewValue(Kind::kDict);
    case Global::kRebuildTensor:
      require_arity(4, 4);
      return RebuildTensor(args, nullptr);
    case Global::kRebuildTensorV2:
      require_arity(6, 7);
      return RebuildTensor(args, nullptr);
    case Global::kRebuildTensorV3: {
      require_arity(7, 8);
      const AllowedGlobal* dtype = GlobalOf(*args[6]);
      if (dtype == nullptr || dtype->global != Global::kDtype) {
        Malformed(name + " without a float dtype");
      }
      return RebuildTensor(args, dtype);
    }
    case Global::kRebuildParameter:
    case Global::kRebuildParameterWithState:
      require_arity(3, 4);
      if (!IsObject(*args[0], kTensorTag)) Malformed(name + " of " + PickleKindName(args[0]->kind));
      return args[0];  // a Parameter's data is all a state dict needs
    case Global::kTypedStorageClass:
    case Global::kUntypedStorageClass:
    case Global::kDtype:
      break;
  }
  Refuse("calls '" + name + "'");
}

PickleRef StateDictUnpickler::PersistentLoad(const PickleRef& pid) {
  // torch.save writes ('storage', <storage class>, '<key>', '<location>', <element count>).
  if (pid->kind != Kind::kTuple || pid->items.size() != 5 || pid->items[0]->kind != Kind::kString ||
      pid->items[0]->text != "storage") {
    Malformed("persistent id is not a ('storage', ...) tuple");
  }
  const AllowedGlobal* type = GlobalOf(*pid->items[1]);
  const PickleValue& key = *pid->items[2];
  const PickleValue& numel = *pid->items[4];
  if (type == nullptr ||
      (type->global != Global::kTypedStorageClass &&
       type->global != Global::kUntypedStorageClass && type->global != Global::kDtype)) {
    Malformed("persistent id names no storage class");
  }
  if (key.kind != Kind::kString || numel.kind != Kind::kInt || numel.integer < 0) {
    Malformed("persistent id has a bad key or element count");
  }
  auto found = storage_bytes_.find(key.text);
  if (found == storage_bytes_.end()) {
    const std::string entry_name = prefix_ + "data/" + key.text;
    const ZipEntry* entry = archive_.Find(entry_name);
    if (entry == nullptr) {
      Fail("storage '" + PrintableName(entry_name) + "' referenced by the pickle is missing from "
           "the archive; the file is truncated or corrupted, download it again");
    }
    found = storage_bytes_.emplace(key.text, archive_.ReadStored(*entry)).first;
  }
  auto storage = std::make_shared<Storage>();
  storage->key = key.text;
  storage->typed = type->global != Global::kUntypedStorageClass;
  storage->type = type->type;
  storage->bytes = found->second;
  const uint64_t item_size = storage->typed ? weights::ItemSize(storage->type) : 1;
  uint64_t byte_size = 0;
  if (!weights::MultiplyWithin(static_cast<uint64_t>(numel.integer), item_size, storage->bytes.size,
                               &byte_size)) {
    Fail("storage '" + PrintableName(key.text) + "' declares " + std::to_string(numel.integer) +
         " elements but its archive entry holds only " + std::to_string(storage->bytes.size) +
         " bytes; the file is corrupted, download it again");
  }
  PickleRef value = NewValue(Kind::kObject);
  value->tag = kStorageTag;
  value->object = std::move(storage);
  return value;
}

std::vector<int64_t> StateDictUnpickler::ReadSizes(const PickleValue& value,
                                                   const char* what) const {
  if (value.kind != Kind::kTuple || value.items.size() > kMaxDimensions) {
    Malformed(std::string("tensor ") + what + " is not a tuple of at most 64 ints");
  }
  std::vector<int64_t> sizes;
  for (const PickleRef& item : value.items) {
    if (item->kind != Kind::kInt || item->integer < 0) {
      Malformed(std::string("tensor ") + what + " holds a non-integer or negative entry");
    }
    sizes.push_back(item->integer);
  }
  return sizes;
}

PickleRef StateDictUnpickler::RebuildTensor(const std::vector<PickleRef>& args,
                                            const AllowedGlobal* dtype) {
  // (storage, storage_offset, size, stride, ...): offset and strides count elements.
  if (!IsObject(*args[0], kStorageTag)) {
    Malformed(std::string("tensor rebuilt from ") + PickleKindName(args[0]->kind));
  }
  if (args[1]->kind != Kind::kInt || args[1]->integer < 0) {
    Malformed("tensor storage offset is not a non-negative int");
  }
  const Storage& storage = *std::static_pointer_cast<const Storage>(args[0]->object);
  const std::vector<int64_t> sizes = ReadSizes(*args[2], "size");
  const std::vector<int64_t> strides = ReadSizes(*args[3], "stride");
  if (sizes.size() != strides.size()) Malformed("tensor size and stride differ in length");
  if (!storage.typed && dtype == nullptr) {
    Fail("a tensor views untyped storage '" + PrintableName(storage.key) + "' without a dtype; "
         "this torch.save variant is not supported. Re-save it with "
         "torch.save(module.state_dict(), path)");
  }
  const ScalarType type = dtype != nullptr ? dtype->type : storage.type;
  const uint64_t item_size = weights::ItemSize(type);
  const uint64_t storage_elements = storage.bytes.size / item_size;
  const uint64_t offset = static_cast<uint64_t>(args[1]->integer);

  uint64_t element_count = 1;
  for (int64_t size : sizes) {
    if (!weights::MultiplyWithin(element_count, static_cast<uint64_t>(size), budget_left_,
                                 &element_count)) {
      Fail("tensors expand to more elements than a file of this size can hold (storage '" +
           PrintableName(storage.key) + "'); the file is corrupted or crafted");
    }
  }
  budget_left_ -= element_count;
  auto tensor = std::make_shared<Tensor>();
  tensor->shape = sizes;
  tensor->data.resize(static_cast<size_t>(element_count));
  if (element_count > 0) {
    // The furthest element read is offset + sum((size-1)*stride); it must lie in the storage.
    uint64_t last = offset;
    for (size_t d = 0; d < sizes.size() && last < storage_elements; ++d) {
      uint64_t reach = 0;
      if (!weights::MultiplyWithin(static_cast<uint64_t>(sizes[d] - 1),
                                   static_cast<uint64_t>(strides[d]), storage_elements, &reach) ||
          reach > storage_elements - last) {
        last = storage_elements;
        break;
      }
      last += reach;
    }
    if (last >= storage_elements) {
      Fail("a tensor (shape, strides and offset) reaches outside its storage '" +
           PrintableName(storage.key) + "' of " + std::to_string(storage_elements) + " " +
           weights::ScalarTypeName(type) + " elements; the file is corrupted, download it again");
    }
    bool contiguous = true;
    uint64_t expected_stride = 1;
    for (size_t d = sizes.size(); d-- > 0;) {
      if (sizes[d] != 1 && static_cast<uint64_t>(strides[d]) != expected_stride) contiguous = false;
      expected_stride *= static_cast<uint64_t>(sizes[d]);
    }
    const uint8_t* base = storage.bytes.data;
    if (contiguous) {
      weights::DecodeElements(type, base + offset * item_size, tensor->data.size(),
                              tensor->data.data());
    } else {
      // Odometer walk over the index space; unsigned wrap-around cancels out on each carry.
      std::vector<int64_t> index(sizes.size(), 0);
      uint64_t element = offset;
      for (float& out : tensor->data) {
        out = weights::DecodeElement(type, base + element * item_size);
        for (size_t d = sizes.size(); d-- > 0;) {
          element += static_cast<uint64_t>(strides[d]);
          if (++index[d] < sizes[d]) break;
          element -= static_cast<uint64_t>(strides[d]) * static_cast<uint64_t>(sizes[d]);
          index[d] = 0;
        }
      }
    }
  }
  PickleRef value = NewValue(Kind::kObject);
  value->tag = kTensorTag;
  value->object = std::move(tensor);
  return value;
}

StateDict StateDictUnpickler::Load() {
  const PickleRef result = Run();
  if (result->kind != Kind::kDict) {
    Fail("is not a state dict of tensors (top level is " +
         std::string(PickleKindName(result->kind)) + "); " + kRefusalAdvice);
  }
  StateDict tensors;
  for (const auto& [key, value] : result->entries) {
    if (key->kind != Kind::kString || !IsObject(*value, kTensorTag)) {
      const std::string entry = key->kind == Kind::kString ? "'" + PrintableName(key->text) + "'"
                                                           : PickleKindName(key->kind);
      const char* holds = IsObject(*value, kStorageTag) ? "a storage" : PickleKindName(value->kind);
      Fail("is not a state dict of tensors (entry " + entry + " holds " + holds + "); " +
           kRefusalAdvice);
    }
    tensors[key->text] = *std::static_pointer_cast<const Tensor>(value->object);
  }
  return tensors;
}

// The archive's top folder holds data.pkl; its name is whatever torch.save chose (the file
// stem in recent versions, "archive" in others), so find it rather than assume it.
std::string FindPicklePrefix(const ZipArchive& archive) {
  const std::string suffix = "data.pkl";
  std::string prefix;
  int found = 0;
  for (const ZipEntry& entry : archive.entries()) {
    const std::string& name = entry.name;
    if (name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
      continue;
    }
    const std::string head = name.substr(0, name.size() - suffix.size());
    if (!head.empty() && (head.back() != '/' || head.find('/') != head.size() - 1)) continue;
    prefix = head;
    ++found;
  }
  if (found == 0) {
    throw CoreError("ERR_MODEL_FILES", archive.source_name() + ": is a zip archive but not a "
                    "torch.save() file (no '<name>/data.pkl' entry); save the weights with "
                    "torch.save or as .safetensors");
  }
  if (found > 1) {
    throw CoreError("ERR_MODEL_FILES", archive.source_name() + ": holds several data.pkl "
                    "entries, so it is not a single torch.save() file; re-save it with torch.save");
  }
  return prefix;
}

StateDict LoadFromArchive(const ZipArchive& archive) {
  const std::string prefix = FindPicklePrefix(archive);
  if (const ZipEntry* byteorder = archive.Find(prefix + "byteorder")) {
    const ByteView order = archive.ReadStored(*byteorder);
    if (std::string(reinterpret_cast<const char*>(order.data), order.size) != "little") {
      throw CoreError("ERR_MODEL_FILES",
                      archive.source_name() + ": was saved on a big-endian machine, which is "
                      "not supported; load and re-save it on a little-endian one");
    }
  }
  const ZipEntry* pickle = archive.Find(prefix + "data.pkl");
  return StateDictUnpickler(archive, prefix, archive.ReadStored(*pickle)).Load();
}

}  // namespace

StateDict LoadTorchStateDictFromBytes(const std::vector<uint8_t>& bytes,
                                      const std::string& source_name) {
  return LoadFromArchive(ZipArchive(bytes, source_name));
}

StateDict LoadTorchStateDict(const std::string& path) {
  return LoadFromArchive(ZipArchive::Open(path));
}

}  // namespace m3
