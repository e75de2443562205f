#include "graph/onnx_wire.h"

#include <algorithm>
#include <cstring>

namespace m3::onnx {

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

void PutFixed32(std::string& out, uint32_t number, uint32_t bits) {
  PutVarint(out, (static_cast<uint64_t>(number) << 3) | kFixed32);
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}

void PutVarintField(std::string& out, uint32_t number, uint64_t v) {
  PutVarint(out, (static_cast<uint64_t>(number) << 3) | kVarint);
  PutVarint(out, v);
}

const Attribute* Node::Attr(std::string_view n) const {
  for (const auto& a : attributes)
    if (a.name == n) return &a;
  return nullptr;
}

namespace {

std::optional<Attribute> ParseAttribute(std::string_view bytes) {
  auto fields = Fields(bytes);
  if (!fields) return std::nullopt;
  Attribute a;
  a.bytes = bytes;
  for (const auto& f : *fields) {
    if (f.number == 1 && f.wire == kBytes) a.name = f.bytes;
    else if (f.number == 2 && f.wire == kFixed32) {
      const auto bits = static_cast<uint32_t>(f.value);
      float v;
      std::memcpy(&v, &bits, 4);
      a.f = v;
    } else if (f.number == 3 && f.wire == kVarint) a.i = static_cast<int64_t>(f.value);
    else if (f.number == 8 && f.wire == kVarint) a.ints.push_back(static_cast<int64_t>(f.value));
    else if (f.number == 8 && f.wire == kBytes) {  // packed
      const char* p = f.bytes.data();
      const char* end = p + f.bytes.size();
      uint64_t v;
      while (p < end)
        if (ReadVarint(p, end, &v)) a.ints.push_back(static_cast<int64_t>(v));
        else return std::nullopt;
    }
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

/// The element type a ValueInfoProto declares (type.tensor_type.elem_type); 0 when it has none.
int64_t ValueInfoElemType(std::string_view bytes) {
  auto info = Fields(bytes);
  if (!info) return 0;
  for (const auto& f : *info) {
    if (f.number != 2 || f.wire != kBytes) continue;
    auto type = Fields(f.bytes);
    if (!type) return 0;
    for (const auto& t : *type) {
      if (t.number != 1 || t.wire != kBytes) continue;
      auto tensor = Fields(t.bytes);
      if (!tensor) return 0;
      for (const auto& e : *tensor)
        if (e.number == 1 && e.wire == kVarint) return static_cast<int64_t>(e.value);
    }
  }
  return 0;
}

/// The `name` field (1) of a ValueInfoProto.
std::string_view ValueInfoName(std::string_view bytes) {
  auto fields = Fields(bytes);
  if (fields)
    for (const auto& g : *fields)
      if (g.number == 1 && g.wire == kBytes) return g.bytes;
  return {};
}

}  // namespace

std::optional<TensorHeader> ParseTensorHeader(std::string_view tensor) {
  auto fields = Fields(tensor);
  if (!fields) return std::nullopt;
  TensorHeader t;
  for (const auto& f : *fields) {
    if (f.number == 1 && f.wire == kVarint) t.dims.push_back(static_cast<int64_t>(f.value));
    else if (f.number == 1 && f.wire == kBytes) {
      const char* p = f.bytes.data();
      const char* end = p + f.bytes.size();
      uint64_t d;
      while (p < end)
        if (ReadVarint(p, end, &d)) t.dims.push_back(static_cast<int64_t>(d));
        else return std::nullopt;
    } else if (f.number == 2 && f.wire == kVarint) t.data_type = static_cast<int64_t>(f.value);
    else if (f.number == 8 && f.wire == kBytes) t.name = f.bytes;
    else if (f.number == 14 && f.wire == kVarint) t.external = f.value == 1;
  }
  return t;
}

std::optional<ExternalData> ParseExternalData(std::string_view tensor) {
  auto fields = Fields(tensor);
  if (!fields) return std::nullopt;
  ExternalData d;
  for (const auto& f : *fields) {
    if (f.number != 13 || f.wire != kBytes) continue;
    auto entry = Fields(f.bytes);
    if (!entry) return std::nullopt;
    std::string_view key, value;
    for (const auto& e : *entry) {
      if (e.number == 1 && e.wire == kBytes) key = e.bytes;
      if (e.number == 2 && e.wire == kBytes) value = e.bytes;
    }
    auto number = [&](uint64_t* out) {
      if (value.empty() || value.size() > 19) return false;
      uint64_t v = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + static_cast<uint64_t>(c - '0');
      }
      *out = v;
      return true;
    };
    if (key == "location") d.location = value;
    else if (key == "offset" && !number(&d.offset)) return std::nullopt;
    else if (key == "length") {
      uint64_t v;
      if (!number(&v)) return std::nullopt;
      d.length = static_cast<int64_t>(v);
    }
  }
  if (d.location.empty()) return std::nullopt;
  return d;
}

std::optional<std::vector<float>> FloatValues(std::string_view tensor) {
  auto fields = Fields(tensor);
  if (!fields) return std::nullopt;
  int64_t type = 0;
  std::string_view raw;
  std::vector<float> values;
  for (const auto& f : *fields) {
    if (f.number == 2 && f.wire == kVarint) type = static_cast<int64_t>(f.value);
    else if (f.number == 9 && f.wire == kBytes) raw = f.bytes;
    else if (f.number == 4 && f.wire == kBytes) {
      if (f.bytes.size() % 4) return std::nullopt;
      const size_t at = values.size();
      values.resize(at + f.bytes.size() / 4);
      std::memcpy(values.data() + at, f.bytes.data(), f.bytes.size());
    } else if (f.number == 4 && f.wire == kFixed32) {
      const auto bits = static_cast<uint32_t>(f.value);
      float v;
      std::memcpy(&v, &bits, 4);
      values.push_back(v);
    } else if (f.number == 14 && f.wire == kVarint && f.value == 1) return std::nullopt;  // external data
  }
  if (type != 1) return std::nullopt;
  if (!raw.empty()) {
    if (raw.size() % 4 || !values.empty()) return std::nullopt;
    values.resize(raw.size() / 4);
    std::memcpy(values.data(), raw.data(), raw.size());
  }
  return values;
}

std::string HalfTensor(std::string_view name, const std::vector<int64_t>& dims, const std::vector<uint16_t>& bits) {
  std::string tensor;
  if (!dims.empty()) {
    std::string packed;
    for (int64_t d : dims) PutVarint(packed, static_cast<uint64_t>(d));
    PutBytes(tensor, 1, packed);
  }
  PutVarintField(tensor, 2, 10);  // FLOAT16
  if (!name.empty()) PutBytes(tensor, 8, name);
  PutBytes(tensor, 9, std::string_view(reinterpret_cast<const char*>(bits.data()), bits.size() * 2));
  return tensor;
}

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

std::optional<Graph> ParseGraph(const std::string& model_bytes) {
  Graph g;
  auto model = Fields(model_bytes);
  if (!model) return std::nullopt;
  g.model = std::move(*model);
  bool found = false;
  for (size_t i = 0; i < g.model.size(); ++i) {
    const Field& f = g.model[i];
    if (f.number == 7 && f.wire == kBytes) {
      if (found) return std::nullopt;  // two graph fields (protobuf would merge them): leave it alone
      found = true;
      g.graph_index = i;
    }
    if (f.number == 8 && f.wire == kBytes) {  // opset_import
      auto op = Fields(f.bytes);
      if (!op) return std::nullopt;
      std::string_view domain;
      int64_t version = 0;
      for (const auto& o : *op) {
        if (o.number == 1 && o.wire == kBytes) domain = o.bytes;
        if (o.number == 2 && o.wire == kVarint) version = static_cast<int64_t>(o.value);
      }
      if (domain.empty() || domain == "ai.onnx") g.opset = version;
      g.domains.push_back(domain);
    }
  }
  if (!found) return std::nullopt;
  auto graph = Fields(g.model[g.graph_index].bytes);
  if (!graph) return std::nullopt;
  g.fields = std::move(*graph);
  for (size_t i = 0; i < g.fields.size(); ++i) {
    const Field& f = g.fields[i];
    if (f.wire != kBytes) continue;
    if (f.number == 1) {
      auto n = ParseNode(f);
      if (!n) return std::nullopt;
      for (const auto& a : n->attributes)
        if (a.subgraph) return std::nullopt;
      g.nodes.push_back(std::move(*n));
      g.node_field.push_back(i);
    } else if (f.number == 5) {  // initializer
      auto t = ParseTensorHeader(f.bytes);
      if (!t) return std::nullopt;
      g.initializer_bytes[t->name] = f.bytes;
      g.initializers[t->name] = std::move(*t);
    } else if (f.number == 11) {  // input
      g.graph_inputs[ValueInfoName(f.bytes)] = 1;
      g.declared_type[ValueInfoName(f.bytes)] = ValueInfoElemType(f.bytes);
    } else if (f.number == 12) {  // output
      g.graph_outputs[ValueInfoName(f.bytes)] = 1;
      g.declared_type[ValueInfoName(f.bytes)] = ValueInfoElemType(f.bytes);
    }
  }
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (const auto& o : g.nodes[i].outputs) g.producer[o] = i;
    for (const auto& in : g.nodes[i].inputs)
      if (!in.empty()) g.consumers[in].push_back(i);
  }
  return g;
}

std::optional<size_t> SoleProducer(const Graph& g, std::string_view name, size_t reader) {
  auto p = g.producer.find(name);
  if (p == g.producer.end() || g.graph_outputs.count(name)) return std::nullopt;
  auto c = g.consumers.find(name);
  if (c == g.consumers.end() || c->second.size() != 1 || c->second[0] != reader ||
      g.nodes[p->second].outputs.size() != 1)
    return std::nullopt;
  return p->second;
}

std::string ReassembleGraph(const Graph& g, const std::vector<std::string_view>& pieces) {
  // Written straight into the model (the graph's length first), so the weights are copied once.
  size_t graph_size = 0;
  for (const auto& p : pieces) graph_size += p.size();
  size_t model_size = graph_size + 64;
  for (size_t i = 0; i < g.model.size(); ++i)
    if (i != g.graph_index) model_size += g.model[i].whole.size();
  std::string out;
  out.reserve(model_size);
  for (size_t i = 0; i < g.model.size(); ++i) {
    if (i != g.graph_index) {
      out.append(g.model[i].whole.data(), g.model[i].whole.size());
      continue;
    }
    PutVarint(out, (uint64_t{7} << 3) | kBytes);
    PutVarint(out, graph_size);
    for (const auto& p : pieces) out.append(p.data(), p.size());
  }
  return out;
}

std::string Reassemble(const Graph& g, const std::vector<Action>& action, const std::vector<std::string>& replacement,
                       std::string_view domain) {
  // Nodes dropped or replaced in place (a replacement sits where the node it replaces was, so
  // after everything it reads), everything else copied as it was.
  std::unordered_map<size_t, size_t> node_at;
  for (size_t n = 0; n < g.node_field.size(); ++n) node_at[g.node_field[n]] = n;
  std::vector<std::string_view> pieces(g.fields.size());
  for (size_t i = 0; i < g.fields.size(); ++i) {
    auto it = node_at.find(i);
    if (it == node_at.end() || action[it->second] == Action::kKeep) pieces[i] = g.fields[i].whole;
    else if (action[it->second] == Action::kReplace) pieces[i] = replacement[it->second];
  }
  std::string out = ReassembleGraph(g, pieces);
  if (std::find(g.domains.begin(), g.domains.end(), domain) == g.domains.end()) {
    std::string opset_id;
    PutBytes(opset_id, 1, domain);
    PutVarintField(opset_id, 2, 1);
    PutBytes(out, 8, opset_id);
  }
  return out;
}

std::string EncodeNodeOutputs(const std::vector<std::string_view>& inputs, const std::vector<std::string_view>& outputs,
                              std::string_view name, std::string_view op_type, std::string_view domain,
                              const std::vector<std::string_view>& attributes) {
  std::string node;
  for (const auto& in : inputs) PutBytes(node, 1, in);
  for (const auto& out : outputs) PutBytes(node, 2, out);
  PutBytes(node, 3, name);
  PutBytes(node, 4, op_type);
  for (const auto& a : attributes) PutBytes(node, 5, a);
  if (!domain.empty()) PutBytes(node, 7, domain);
  std::string field;
  PutBytes(field, 1, node);
  return field;
}

std::string EncodeNode(const std::vector<std::string_view>& inputs, std::string_view output, const std::string& name,
                       std::string_view op_type, std::string_view domain, const std::vector<std::string>& attributes) {
  const std::vector<std::string_view> encoded(attributes.begin(), attributes.end());
  return EncodeNodeOutputs(inputs, {output}, name, op_type, domain, encoded);
}

std::string FloatAttribute(std::string_view name, float value) {
  std::string attr;
  PutBytes(attr, 1, name);
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  PutFixed32(attr, 2, bits);
  PutVarintField(attr, 20, 1);  // AttributeProto.FLOAT
  return attr;
}

std::string TensorAttribute(std::string_view name, std::string_view tensor) {
  std::string attr;
  PutBytes(attr, 1, name);
  PutBytes(attr, 5, tensor);
  PutVarintField(attr, 20, 4);  // AttributeProto.TENSOR
  return attr;
}

std::string IntAttribute(std::string_view name, int64_t value) {
  std::string attr;
  PutBytes(attr, 1, name);
  PutVarintField(attr, 3, static_cast<uint64_t>(value));
  PutVarintField(attr, 20, 2);  // AttributeProto.INT
  return attr;
}

}  // namespace m3::onnx
