// Just enough of the protobuf wire format and of onnx.proto to rewrite an exported graph's nodes
// without an ONNX library: a message is read as its fields in order, and a rewritten model is
// the original's bytes with some `node` fields dropped or replaced, so every untouched field (the
// weights with them) is copied byte for byte.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace m3::onnx {

enum Wire : int { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

struct Field {
  uint32_t number = 0;
  int wire = 0;
  uint64_t value = 0;      // kVarint, kFixed64, kFixed32
  std::string_view bytes;  // kBytes
  std::string_view whole;  // the field as encoded (tag included)
};

bool ReadVarint(const char*& p, const char* end, uint64_t* out);
/// The fields of one message, in order; nullopt when the bytes are not a well-formed message.
std::optional<std::vector<Field>> Fields(std::string_view msg);

void PutVarint(std::string& out, uint64_t v);
void PutBytes(std::string& out, uint32_t number, std::string_view bytes);
void PutFixed32(std::string& out, uint32_t number, uint32_t bits);
void PutVarintField(std::string& out, uint32_t number, uint64_t v);

struct Attribute {
  std::string_view name;
  std::optional<int64_t> i;
  std::optional<float> f;
  std::vector<int64_t> ints;
  std::string_view tensor;  // TensorProto bytes
  bool subgraph = false;    // a graph-valued attribute (control flow)
  std::string_view bytes;   // the AttributeProto as encoded (without its tag)
};

struct Node {
  std::vector<std::string_view> inputs, outputs;
  std::string_view name, op_type, domain;
  std::vector<Attribute> attributes;
  std::string_view whole;  // the encoded `node` field of the graph
  const Attribute* Attr(std::string_view n) const;
  bool Is(std::string_view op) const { return op_type == op && (domain.empty() || domain == "ai.onnx"); }
};

/// What the rewrites need of a TensorProto: name, element type, dims, where the data is.
struct TensorHeader {
  std::string_view name;
  int64_t data_type = 0;  // TensorProto.DataType (1 FLOAT)
  std::vector<int64_t> dims;
  bool external = false;
};
std::optional<TensorHeader> ParseTensorHeader(std::string_view tensor);

/// Where an external tensor's bytes are (its external_data entries); length -1 when not given.
struct ExternalData {
  std::string_view location;
  uint64_t offset = 0;
  int64_t length = -1;
};
std::optional<ExternalData> ParseExternalData(std::string_view tensor);

/// A float TensorProto's values, read from raw_data or float_data (not external data); nullopt
/// for another element type or a malformed message.
std::optional<std::vector<float>> FloatValues(std::string_view tensor);

/// An encoded TensorProto of element type FLOAT16 (dims, name when not empty, raw_data).
std::string HalfTensor(std::string_view name, const std::vector<int64_t>& dims, const std::vector<uint16_t>& bits);

/// The value of a one-element float (or double) TensorProto held in the message itself.
std::optional<float> ScalarOf(std::string_view tensor);

/// A model's main graph, parsed for rewriting.
struct Graph {
  std::vector<Field> model;        // the ModelProto's fields
  size_t graph_index = 0;          // model[graph_index] is the graph
  std::vector<Field> fields;       // the GraphProto's fields
  std::vector<Node> nodes;
  std::vector<size_t> node_field;  // index in `fields` of each node
  std::unordered_map<std::string_view, TensorHeader> initializers;
  std::unordered_map<std::string_view, std::string_view> initializer_bytes;
  std::unordered_map<std::string_view, int> graph_inputs, graph_outputs;
  // The element type (TensorProto.DataType) the graph declares for each input and output; 0 when
  // the declaration has none.
  std::unordered_map<std::string_view, int64_t> declared_type;
  int64_t opset = 0;               // the default domain's version
  std::vector<std::string_view> domains;  // every imported domain
  // Readers and writers of each value name.
  std::unordered_map<std::string_view, size_t> producer;
  std::unordered_map<std::string_view, std::vector<size_t>> consumers;
};

/// Parses a serialized ModelProto. nullopt when it is not well-formed, has no graph or two graph
/// fields, or when any node carries a subgraph (names may be used inside: such graphs are left alone).
std::optional<Graph> ParseGraph(const std::string& model_bytes);

/// The node producing `name` when it is that node's only output, `reader` its only reader and it
/// is not a graph output.
std::optional<size_t> SoleProducer(const Graph& g, std::string_view name, size_t reader);

enum class Action : char { kKeep, kDrop, kReplace };

/// The model again with node i dropped or replaced (by replacement[i], an encoded `node` field)
/// as action[i] says, and `domain` (version 1) added to the opset imports when missing.
std::string Reassemble(const Graph& g, const std::vector<Action>& action, const std::vector<std::string>& replacement,
                       std::string_view domain);

/// The model again with each graph field replaced by pieces[i] (its encoded field or fields; empty
/// drops it), everything outside the graph copied as it was.
std::string ReassembleGraph(const Graph& g, const std::vector<std::string_view>& pieces);

/// An encoded `node` field with any number of outputs.
std::string EncodeNodeOutputs(const std::vector<std::string_view>& inputs, const std::vector<std::string_view>& outputs,
                              std::string_view name, std::string_view op_type, std::string_view domain,
                              const std::vector<std::string_view>& attributes);

/// An encoded `node` field: inputs, one output, name, op type and domain, attributes already encoded.
std::string EncodeNode(const std::vector<std::string_view>& inputs, std::string_view output, const std::string& name,
                       std::string_view op_type, std::string_view domain, const std::vector<std::string>& attributes);

/// An encoded AttributeProto of type FLOAT, and of type INT.
std::string FloatAttribute(std::string_view name, float value);
std::string IntAttribute(std::string_view name, int64_t value);
/// An encoded AttributeProto of type TENSOR holding an encoded TensorProto.
std::string TensorAttribute(std::string_view name, std::string_view tensor);

}  // namespace m3::onnx
