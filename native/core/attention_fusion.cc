#include "core/attention_fusion.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace m3 {
namespace {

// ---- protobuf wire format ----

enum Wire : int { kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5 };

struct Field {
  uint32_t number = 0;
  int wire = 0;
  uint64_t value = 0;          // kVarint, kFixed64, kFixed32
  std::string_view bytes;      // kBytes
  std::string_view whole;      // the field as encoded (tag included)
};

bool ReadVarint(const char*& p, const char* end, uint64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && p < end; shift += 7) {
    const auto byte = static_cast<uint8_t>(*p++);
    v |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

/// The fields of one message, in order; nullopt when the bytes are not a well-formed message.
std::optional<std::vector<Field>> Fields(std::string_view msg) {
  std::vector<Field> fields;
  const char* p = msg.data();
  const char* end = p + msg.size();
  while (p < end) {
    const char* start = p;
    uint64_t tag;
    if (!ReadVarint(p, end, &tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return std::nullopt;
    Field f;
    f.number = static_cast<uint32_t>(tag >> 3);
    f.wire = static_cast<int>(tag & 7);
    switch (f.wire) {
      case kVarint:
        if (!ReadVarint(p, end, &f.value)) return std::nullopt;
        break;
      case kFixed64:
        if (end - p < 8) return std::nullopt;
        std::memcpy(&f.value, p, 8);
        p += 8;
        break;
      case kFixed32: {
        if (end - p < 4) return std::nullopt;
        uint32_t v;
        std::memcpy(&v, p, 4);
        f.value = v;
        p += 4;
        break;
      }
      case kBytes: {
        uint64_t len;
        if (!ReadVarint(p, end, &len) || len > static_cast<uint64_t>(end - p)) return std::nullopt;
        f.bytes = std::string_view(p, len);
        p += len;
        break;
      }
      default:
        return std::nullopt;  // groups are not used by ONNX
    }
    f.whole = std::string_view(start, p - start);
    fields.push_back(f);
  }
  return fields;
}

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void PutBytes(std::string& out, uint32_t number, std::string_view bytes) {
  PutVarint(out, (static_cast<uint64_t>(number) << 3) | kBytes);
  PutVarint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

// ---- the ONNX messages the rewrite reads (field numbers from onnx.proto) ----

struct Attribute {
  std::string_view name;
  std::optional<int64_t> i;
  std::optional<float> f;
  std::string_view tensor;  // TensorProto bytes
  bool subgraph = false;    // a graph-valued attribute (control flow)
};

struct Node {
  std::vector<std::string_view> inputs, outputs;
  std::string_view name, op_type, domain;
  std::vector<Attribute> attributes;
  std::string_view whole;  // the encoded `node` field of the graph
  const Attribute* Attr(std::string_view n) const {
    for (const auto& a : attributes)
      if (a.name == n) return &a;
    return nullptr;
  }
  bool Is(std::string_view op) const { return op_type == op && (domain.empty() || domain == "ai.onnx"); }
};

std::optional<Attribute> ParseAttribute(std::string_view bytes) {
  auto fields = Fields(bytes);
  if (!fields) return std::nullopt;
  Attribute a;
  for (const auto& f : *fields) {
    if (f.number == 1 && f.wire == kBytes) a.name = f.bytes;
    else if (f.number == 2 && f.wire == kFixed32) {
      const auto bits = static_cast<uint32_t>(f.value);
      float v;
      std::memcpy(&v, &bits, 4);
      a.f = v;
    } else if (f.number == 3 && f.wire == kVarint) a.i = static_cast<int64_t>(f.value);
    else if (f.number == 5 && f.wire == kBytes) a.tensor = f.bytes;
    else if (f.number == 6 || f.number == 11) a.subgraph = true;  // g, graphs
  }
  return a;
}

std::optional<Node> ParseNode(const Field& field) {
  auto fields = Fields(field.bytes);
  if (!fields) return std::nullopt;
  Node n;
  n.whole = field.whole;
  for (const auto& f : *fields) {
    if (f.wire != kBytes) continue;
    switch (f.number) {
      case 1: n.inputs.push_back(f.bytes); break;
      case 2: n.outputs.push_back(f.bytes); break;
      case 3: n.name = f.bytes; break;
      case 4: n.op_type = f.bytes; break;
      case 7: n.domain = f.bytes; break;
      case 5: {
        auto a = ParseAttribute(f.bytes);
        if (!a) return std::nullopt;
        n.attributes.push_back(*a);
        break;
      }
      default: break;
    }
  }
  return n;
}

/// The value of a one-element float (or double) TensorProto held in the message itself.
std::optional<float> ScalarOf(std::string_view tensor) {
  auto fields = Fields(tensor);
  if (!fields) return std::nullopt;
  int64_t type = 0;
  bool one_element = true;  // every dimension is 1 (or there are none)
  std::string_view raw, packed_floats, packed_doubles;
  std::vector<float> floats;
  for (const auto& f : *fields) {
    if (f.number == 1 && f.wire == kVarint) one_element = one_element && f.value == 1;
    else if (f.number == 1 && f.wire == kBytes) {
      const char* p = f.bytes.data();
      const char* end = p + f.bytes.size();
      uint64_t d;
      while (p < end)
        if (ReadVarint(p, end, &d)) one_element = one_element && d == 1;
        else return std::nullopt;
    } else if (f.number == 2 && f.wire == kVarint) type = static_cast<int64_t>(f.value);
    else if (f.number == 9 && f.wire == kBytes) raw = f.bytes;
    else if (f.number == 4 && f.wire == kBytes) packed_floats = f.bytes;
    else if (f.number == 4 && f.wire == kFixed32) {
      const auto bits = static_cast<uint32_t>(f.value);
      float v;
      std::memcpy(&v, &bits, 4);
      floats.push_back(v);
    } else if (f.number == 10 && f.wire == kBytes) packed_doubles = f.bytes;
    else if (f.number == 14 && f.wire == kVarint && f.value == 1) return std::nullopt;  // external data
  }
  if (!one_element) return std::nullopt;
  if (type == 1) {  // FLOAT
    float v;
    if (raw.size() == 4) std::memcpy(&v, raw.data(), 4);
    else if (packed_floats.size() == 4) std::memcpy(&v, packed_floats.data(), 4);
    else if (floats.size() == 1) v = floats[0];
    else return std::nullopt;
    return v;
  }
  if (type == 11) {  // DOUBLE
    double v;
    const std::string_view src = raw.size() == 8 ? raw : packed_doubles;
    if (src.size() != 8) return std::nullopt;
    std::memcpy(&v, src.data(), 8);
    return static_cast<float>(v);
  }
  return std::nullopt;
}

std::string EncodeFusedNode(const Node& replaced, int index, std::string_view q, std::string_view kt, std::string_view v,
                            std::string_view mask, float scale) {
  std::string node;
  PutBytes(node, 1, q);
  PutBytes(node, 1, kt);
  PutBytes(node, 1, v);
  if (!mask.empty()) PutBytes(node, 1, mask);
  PutBytes(node, 2, replaced.outputs[0]);
  // Unique even where the exporter left node names empty.
  PutBytes(node, 3, std::string(replaced.name) + "/FusedAttention_" + std::to_string(index));
  PutBytes(node, 4, kFusedAttentionOp);
  std::string attr;
  PutBytes(attr, 1, "scale");
  PutVarint(attr, (2u << 3) | kFixed32);
  uint32_t bits;
  std::memcpy(&bits, &scale, 4);
  for (int i = 0; i < 4; ++i) attr.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  PutVarint(attr, (20u << 3) | kVarint);
  PutVarint(attr, 1);  // AttributeProto.FLOAT
  PutBytes(node, 5, attr);
  PutBytes(node, 7, kFusedAttentionDomain);
  std::string field;
  PutBytes(field, 1, node);
  return field;
}

}  // namespace

AttentionFusion FuseAttentionBlocks(const std::string& model_bytes) {
  AttentionFusion result;
  auto model = Fields(model_bytes);
  if (!model) return result;
  const Field* graph_field = nullptr;
  int64_t opset = 0;
  for (const auto& f : *model) {
    if (f.number == 7 && f.wire == kBytes) {
      if (graph_field) return result;  // two graph fields (protobuf would merge them): leave it alone
      graph_field = &f;
    }
    if (f.number == 8 && f.wire == kBytes) {  // opset_import
      auto op = Fields(f.bytes);
      if (!op) return result;
      std::string_view domain;
      int64_t version = 0;
      for (const auto& g : *op) {
        if (g.number == 1 && g.wire == kBytes) domain = g.bytes;
        if (g.number == 2 && g.wire == kVarint) version = static_cast<int64_t>(g.value);
      }
      if (domain.empty() || domain == "ai.onnx") opset = version;
      if (domain == kFusedAttentionDomain) return result;  // already rewritten
    }
  }
  if (!graph_field) return result;
  auto graph = Fields(graph_field->bytes);
  if (!graph) return result;

  std::vector<Node> nodes;
  std::vector<size_t> node_field;  // index in `graph` of each node
  std::unordered_map<std::string_view, float> scalars;
  std::unordered_map<std::string_view, int> graph_outputs;
  for (size_t i = 0; i < graph->size(); ++i) {
    const Field& f = (*graph)[i];
    if (f.wire != kBytes) continue;
    if (f.number == 1) {
      auto n = ParseNode(f);
      if (!n) return result;
      for (const auto& a : n->attributes)
        if (a.subgraph) return result;  // names may be used inside subgraphs: leave such graphs alone
      nodes.push_back(*n);
      node_field.push_back(i);
    } else if (f.number == 5) {  // initializer
      auto t = Fields(f.bytes);
      if (!t) return result;
      for (const auto& g : *t)
        if (g.number == 8 && g.wire == kBytes) {
          if (auto v = ScalarOf(f.bytes)) scalars[g.bytes] = *v;
        }
    } else if (f.number == 12) {  // output
      auto vi = Fields(f.bytes);
      if (!vi) return result;
      for (const auto& g : *vi)
        if (g.number == 1 && g.wire == kBytes) graph_outputs[g.bytes] = 1;
    }
  }
  for (const auto& n : nodes) {
    if (!n.Is("Constant") || n.outputs.size() != 1) continue;
    if (const Attribute* a = n.Attr("value")) {
      if (auto v = ScalarOf(a->tensor)) scalars[n.outputs[0]] = *v;
    } else if (const Attribute* a = n.Attr("value_float"); a && a->f) {
      scalars[n.outputs[0]] = *a->f;
    }
  }

  std::unordered_map<std::string_view, size_t> producer;
  std::unordered_map<std::string_view, std::vector<size_t>> consumers;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& o : nodes[i].outputs) producer[o] = i;
    for (const auto& in : nodes[i].inputs)
      if (!in.empty()) consumers[in].push_back(i);
  }
  // The node producing `name` when it is that node's only output and `expected_consumer` is its only reader.
  auto sole = [&](std::string_view name, size_t expected_consumer) -> std::optional<size_t> {
    auto p = producer.find(name);
    if (p == producer.end() || graph_outputs.count(name)) return std::nullopt;
    const auto& c = consumers[name];
    if (c.size() != 1 || c[0] != expected_consumer || nodes[p->second].outputs.size() != 1) return std::nullopt;
    return p->second;
  };

  enum Action : char { kKeep, kDrop, kReplace };
  std::vector<Action> action(nodes.size(), kKeep);
  std::vector<std::string> replacement(nodes.size());
  for (size_t s = 0; s < nodes.size(); ++s) {
    const Node& softmax = nodes[s];
    if (!softmax.Is("Softmax") || softmax.inputs.size() != 1 || softmax.outputs.size() != 1) continue;
    const Attribute* axis = softmax.Attr("axis");
    const int64_t ax = axis && axis->i ? *axis->i : (opset >= 13 ? -1 : 1);
    if (ax != -1 && ax != 3) continue;  // rank 4: axis 3 is the last (also before opset 13)
    // Softmax's only reader: the MatMul with v.
    const auto& readers = consumers[softmax.outputs[0]];
    if (readers.size() != 1 || graph_outputs.count(softmax.outputs[0])) continue;
    const size_t m2 = readers[0];
    if (!nodes[m2].Is("MatMul") || nodes[m2].inputs.size() != 2 || nodes[m2].inputs[0] != softmax.outputs[0]) continue;

    // The scores: [Div | Mul by a constant of] MatMul(q, kt), possibly plus a mask.
    struct Scores {
      std::vector<size_t> chain;  // nodes from the softmax's input back to the MatMul
      size_t matmul;
      float scale = 1.0f;
    };
    auto trace = [&](std::string_view name, size_t reader) -> std::optional<Scores> {
      Scores sc;
      auto x = sole(name, reader);
      if (!x) return std::nullopt;
      if (nodes[*x].Is("Div") && nodes[*x].inputs.size() == 2 && scalars.count(nodes[*x].inputs[1])) {
        const float c = scalars[nodes[*x].inputs[1]];
        if (c == 0.0f) return std::nullopt;
        sc.scale = 1.0f / c;
        sc.chain.push_back(*x);
        x = sole(nodes[*x].inputs[0], *x);
      } else if (nodes[*x].Is("Mul") && nodes[*x].inputs.size() == 2) {
        const Node& mul = nodes[*x];
        const int side = scalars.count(mul.inputs[1]) ? 1 : scalars.count(mul.inputs[0]) ? 0 : -1;
        if (side < 0) return std::nullopt;
        sc.scale = scalars[mul.inputs[side]];
        sc.chain.push_back(*x);
        x = sole(mul.inputs[1 - side], *x);
      }
      if (!x || !nodes[*x].Is("MatMul") || nodes[*x].inputs.size() != 2) return std::nullopt;
      sc.matmul = *x;
      sc.chain.push_back(*x);
      return sc;
    };
    std::optional<Scores> scores = trace(softmax.inputs[0], s);
    std::string_view mask;
    if (!scores) {
      auto add = sole(softmax.inputs[0], s);
      if (!add || !nodes[*add].Is("Add") || nodes[*add].inputs.size() != 2) continue;
      for (int side = 0; side < 2 && !scores; ++side) {
        scores = trace(nodes[*add].inputs[side], *add);
        if (scores) {
          mask = nodes[*add].inputs[1 - side];
          scores->chain.push_back(*add);
        }
      }
      if (!scores) continue;
    }
    const std::vector<size_t>& chain = scores->chain;
    const size_t m1 = scores->matmul;
    const float scale = scores->scale;
    bool free = action[m2] == kKeep;
    for (size_t c : chain) free = free && action[c] == kKeep;
    if (!free) continue;
    for (size_t c : chain) action[c] = kDrop;
    action[s] = kDrop;
    action[m2] = kReplace;
    replacement[m2] =
        EncodeFusedNode(nodes[m2], result.fused, nodes[m1].inputs[0], nodes[m1].inputs[1], nodes[m2].inputs[1], mask, scale);
    ++result.fused;
  }
  if (result.fused == 0) return result;

  // The graph again, field by field: nodes dropped or replaced in place (the fused node sits where
  // the second MatMul was, after everything it reads), everything else copied as it was.
  std::unordered_map<size_t, size_t> node_at;
  for (size_t n = 0; n < node_field.size(); ++n) node_at[node_field[n]] = n;
  std::string new_graph;
  new_graph.reserve(graph_field->bytes.size());
  for (size_t i = 0; i < graph->size(); ++i) {
    auto it = node_at.find(i);
    if (it == node_at.end() || action[it->second] == kKeep) {
      new_graph.append((*graph)[i].whole.data(), (*graph)[i].whole.size());
    } else if (action[it->second] == kReplace) {
      new_graph += replacement[it->second];
    }
  }
  std::string& out = result.model;
  out.reserve(model_bytes.size() + 64);
  for (const auto& f : *model) {
    if (&f == graph_field) PutBytes(out, 7, new_graph);
    else out.append(f.whole.data(), f.whole.size());
  }
  std::string opset_id;
  PutBytes(opset_id, 1, kFusedAttentionDomain);
  PutVarint(opset_id, (2u << 3) | kVarint);
  PutVarint(opset_id, 1);
  PutBytes(out, 8, opset_id);
  return result;
}

}  // namespace m3
