// Reader for torch.save() files (the zip format of torch >= 1.6) holding a state dict.
//
// The pickle inside is run by a restricted unpickler, in the spirit of
// torch.load(weights_only=True): it knows a fixed set of opcodes and a fixed allow-list of
// globals (collections.OrderedDict, torch._utils._rebuild_tensor[_v2|_v3], _rebuild_parameter,
// the float storage classes and float dtypes) and never calls into anything. Every other
// global or opcode is refused with an error naming it, so a malicious file cannot run code.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "weights/tensor_file.h"

namespace m3 {

/// Loads the state dict saved with torch.save(module.state_dict(), path). The zip entry
/// `<prefix>/data.pkl` is unpickled, each storage is read from `<prefix>/data/<key>`, and every
/// tensor is gathered (honouring storage offset and strides) into fp32. Accepts float16,
/// bfloat16, float32 and float64 storages. Throws CoreError("ERR_MODEL_FILES") naming `path`
/// for a corrupted archive, a refused global or opcode, a top level that is not a dict of
/// tensors, or a tensor reaching outside its storage.
StateDict LoadTorchStateDict(const std::string& path);

/// Same as LoadTorchStateDict on an archive already in memory; `source_name` names it in errors.
StateDict LoadTorchStateDictFromBytes(const std::vector<uint8_t>& bytes,
                                      const std::string& source_name);

}  // namespace m3
