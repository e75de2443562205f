#include "graph/fp16_rewrite.h"

#include <deque>
#include <fstream>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/half.h"
#include "graph/onnx_wire.h"

namespace m3 {
namespace {

constexpr int64_t kFloat = 1, kInt64 = 7, kBool = 9, kFloat16 = 10;

// Ops whose every output has the element type of their first input.
const std::unordered_set<std::string_view> kSameAsFirst = {
    "Abs", "Add", "Ceil", "Clip", "Concat", "CumSum", "Div", "Dropout", "Einsum", "Elu", "Erf", "Exp", "Expand",
    "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "HardSigmoid", "Identity",
    "LayerNormalization", "LeakyRelu", "Log", "LogSoftmax", "MatMul", "Max", "Mean", "Min", "Mod", "Mul", "Neg",
    "Pad", "Pow", "Range", "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Round", "ScatterElements", "ScatterND", "Sigmoid", "Sign", "Slice",
    "Softmax", "Softplus", "Softsign", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "Transpose",
    "Trilu", "Unsqueeze"};
const std::unordered_set<std::string_view> kBoolOut = {"And", "Equal", "Greater", "GreaterOrEqual", "IsInf", "IsNaN",
                                                       "Less", "LessOrEqual", "Not", "Or", "Xor"};
const std::unordered_set<std::string_view> kInt64Out = {"ArgMax", "ArgMin", "NonZero", "Shape", "Size"};
// Ops that only rescale, reshape or bound a squared norm, and so stay with it in fp32.
const std::unordered_set<std::string_view> kNormFollowers = {"Add", "Clip", "Expand", "Max", "Min", "Reciprocal",
                                                             "ReduceMean", "ReduceSum", "Reshape", "Sqrt", "Squeeze",
                                                             "Unsqueeze"};

std::vector<uint16_t> ToHalf(const std::vector<float>& values, int64_t* clamped) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    bool c = false;
    bits[i] = FloatToHalfBits(values[i], &c);
    *clamped += c;
  }
  return bits;
}

class Converter {
 public:
  Converter(const onnx::Graph& g, const std::string& model_dir) : g_(g), dir_(model_dir) {}

  Fp16Rewrite Run() {
    if (!InferTypes()) return Fail();
    for (const auto& [name, type] : g_.declared_type)
      if (g_.graph_inputs.count(name) && type == kFloat && !g_.initializers.count(name))
        return Fail("graph input '" + std::string(name) + "' is float");
    for (const auto& n : g_.nodes)
      if (!n.domain.empty() && n.domain != "ai.onnx") return Fail("node '" + std::string(n.name) + "' is a " +
                                                                  std::string(n.domain) + " op");
    MarkLayerNorms();
    MarkSquaredNorms();
    for (size_t i = 0; i < g_.nodes.size(); ++i) out_.fp32_nodes += fp32_node_[i];
    if (!Emit()) return Fail();
    return std::move(out_);
  }

 private:
  Fp16Rewrite Fail(std::string why = "") {
    Fp16Rewrite r;
    r.problem = why.empty() ? problem_ : why;
    return r;
  }

  bool IsConstant(std::string_view v) const {
    if (g_.initializers.count(v)) return !g_.graph_inputs.count(v);
    auto p = g_.producer.find(v);
    return p != g_.producer.end() && g_.nodes[p->second].Is("Constant");
  }
  int64_t TypeOf(std::string_view v) const {
    auto t = type_.find(v);
    return t == type_.end() ? 0 : t->second;
  }
  const std::vector<size_t>& Readers(std::string_view v) const {
    static const std::vector<size_t> none;
    auto c = g_.consumers.find(v);
    return c == g_.consumers.end() ? none : c->second;
  }
  std::optional<size_t> OnlyReader(std::string_view v) const {
    const auto& r = Readers(v);
    if (r.size() != 1 || g_.graph_outputs.count(v)) return std::nullopt;
    return r[0];
  }

  // Element types of every value: the declared inputs, the initializers, then the nodes in
  // order (repeated in case the graph is not sorted).
  bool InferTypes() {
    for (const auto& [name, type] : g_.declared_type)
      if (g_.graph_inputs.count(name)) type_[name] = type;
    for (const auto& [name, t] : g_.initializers) type_[name] = t.data_type;
    for (int pass = 0; pass < 8; ++pass) {
      bool changed = false, missing = false;
      for (const auto& n : g_.nodes) {
        std::vector<int64_t> types(n.outputs.size(), 0);
        if (!OutputTypes(n, &types)) {
          missing = true;
          continue;
        }
        for (size_t o = 0; o < n.outputs.size(); ++o) {
          if (n.outputs[o].empty() || types[o] == 0) continue;
          changed |= type_.emplace(n.outputs[o], types[o]).second;
        }
      }
      if (!missing) return true;
      if (!changed) break;
    }
    for (const auto& n : g_.nodes) {
      std::vector<int64_t> types(n.outputs.size(), 0);
      if (!OutputTypes(n, &types)) {
        problem_ = "cannot tell the element type of " + std::string(n.op_type) + " node '" + std::string(n.name) + "'";
        return false;
      }
    }
    return true;
  }

  bool OutputTypes(const onnx::Node& n, std::vector<int64_t>* types) const {
    auto all = [&](int64_t t) {
      std::fill(types->begin(), types->end(), t);
      return t != 0;
    };
    const std::string_view op = n.op_type;
    if (op == "Constant") {
      if (const onnx::Attribute* a = n.Attr("value")) {
        auto h = onnx::ParseTensorHeader(a->tensor);
        return h && all(h->data_type);
      }
      if (n.Attr("value_float") || n.Attr("value_floats")) return all(kFloat);
      if (n.Attr("value_int") || n.Attr("value_ints")) return all(kInt64);
      return false;
    }
    if (op == "Cast") {
      const onnx::Attribute* to = n.Attr("to");
      return to && to->i && all(*to->i);
    }
    if (op == "ConstantOfShape") {
      const onnx::Attribute* a = n.Attr("value");
      if (!a) return all(kFloat);
      auto h = onnx::ParseTensorHeader(a->tensor);
      return h && all(h->data_type);
    }
    if (kBoolOut.count(op)) return all(kBool);
    if (kInt64Out.count(op)) return all(kInt64);
    if (op == "Where") return n.inputs.size() == 3 && all(TypeOf(n.inputs[1]));
    if (kSameAsFirst.count(op)) {
      if (n.inputs.empty() || !all(TypeOf(n.inputs[0]))) return false;
      if (op == "Dropout" && types->size() > 1) (*types)[1] = kBool;
      // LayerNormalization's optional mean and inverse deviation: read by nothing in an encoder.
      if (op == "LayerNormalization")
        for (size_t o = 1; o < n.outputs.size(); ++o)
          if (!n.outputs[o].empty() && !Readers(n.outputs[o]).empty()) return false;
      return true;
    }
    return false;
  }

  // ReduceMean(X) -> Sub(X, mean) -> Pow(., 2) -> ReduceMean -> Add(., eps) -> Sqrt -> Div(sub, .)
  void MarkLayerNorms() {
    fp32_node_.assign(g_.nodes.size(), false);
    for (size_t r1 = 0; r1 < g_.nodes.size(); ++r1) {
      const onnx::Node& mean = g_.nodes[r1];
      if (!mean.Is("ReduceMean") || mean.inputs.empty() || mean.outputs.size() != 1 || TypeOf(mean.inputs[0]) != kFloat)
        continue;
      const std::string_view x = mean.inputs[0];
      auto s = OnlyReader(mean.outputs[0]);
      if (!s) continue;
      const onnx::Node& sub = g_.nodes[*s];
      if (!sub.Is("Sub") || sub.inputs.size() != 2 || sub.inputs[0] != x || sub.inputs[1] != mean.outputs[0]) continue;
      const auto& centred = Readers(sub.outputs[0]);
      if (centred.size() != 2 || g_.graph_outputs.count(sub.outputs[0])) continue;
      size_t p = centred[0], d = centred[1];
      if (!g_.nodes[p].Is("Pow")) std::swap(p, d);
      const onnx::Node& pow = g_.nodes[p];
      const onnx::Node& div = g_.nodes[d];
      if (!pow.Is("Pow") || !div.Is("Div") || pow.inputs.size() != 2 || pow.inputs[0] != sub.outputs[0] ||
          !IsConstant(pow.inputs[1]) || div.inputs.size() != 2 || div.inputs[0] != sub.outputs[0])
        continue;
      auto r2 = OnlyReader(pow.outputs[0]);
      if (!r2 || !g_.nodes[*r2].Is("ReduceMean")) continue;
      auto a = OnlyReader(g_.nodes[*r2].outputs[0]);
      if (!a || !g_.nodes[*a].Is("Add") || g_.nodes[*a].inputs.size() != 2) continue;
      const onnx::Node& add = g_.nodes[*a];
      const std::string_view eps = add.inputs[0] == g_.nodes[*r2].outputs[0] ? add.inputs[1] : add.inputs[0];
      if (!IsConstant(eps)) continue;
      auto q = OnlyReader(add.outputs[0]);
      if (!q || !g_.nodes[*q].Is("Sqrt")) continue;
      auto d2 = OnlyReader(g_.nodes[*q].outputs[0]);
      if (!d2 || *d2 != d || div.inputs[1] != g_.nodes[*q].outputs[0]) continue;
      for (size_t i : {r1, *s, p, *r2, *a, *q, d}) fp32_node_[i] = true;
      ++out_.layer_norms;
    }
  }

  // Squared norms and what only rescales them, in fp32.
  void MarkSquaredNorms() {
    std::vector<size_t> frontier;
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      const onnx::Node& n = g_.nodes[i];
      if (fp32_node_[i] || n.outputs.empty() || TypeOf(n.outputs[0]) != kFloat) continue;
      if (n.Is("ReduceL2") || n.Is("ReduceSumSquare") || n.Is("Pow")) {
        fp32_node_[i] = true;
        frontier.push_back(i);
      }
    }
    while (!frontier.empty()) {
      const size_t i = frontier.back();
      frontier.pop_back();
      for (const auto& o : g_.nodes[i].outputs) {
        for (size_t c : Readers(o)) {
          const onnx::Node& n = g_.nodes[c];
          if (fp32_node_[c] || !kNormFollowers.count(n.op_type) || n.domain.size()) continue;
          bool others_constant = true;
          for (const auto& in : n.inputs)
            if (!in.empty() && TypeOf(in) == kFloat && !IsConstant(in) && !FromFp32Node(in)) others_constant = false;
          if (!others_constant) continue;
          fp32_node_[c] = true;
          frontier.push_back(c);
        }
      }
    }
  }

  bool FromFp32Node(std::string_view v) const {
    auto p = g_.producer.find(v);
    return p != g_.producer.end() && fp32_node_[p->second];
  }

  // The element type a float value has after the conversion.
  int64_t NewType(std::string_view v) const {
    if (TypeOf(v) != kFloat) return TypeOf(v);
    if (FromFp32Node(v)) return kFloat;
    if (IsConstant(v)) {
      // A constant read only by fp32 nodes keeps its precision.
      for (size_t r : Readers(v))
        if (!fp32_node_[r]) return kFloat16;
      return Readers(v).empty() ? kFloat16 : kFloat;
    }
    return kFloat16;
  }

  std::string_view Keep(std::string s) {
    names_.push_back(std::move(s));
    return names_.back();
  }

  // A float initializer as fp16 (its bytes read from external data when they live there).
  bool ConvertInitializer(std::string_view bytes, const onnx::TensorHeader& h, std::string* out) {
    std::vector<float> values;
    if (h.external) {
      auto ext = onnx::ParseExternalData(bytes);
      if (!ext) {
        problem_ = "initializer '" + std::string(h.name) + "' has unreadable external_data entries";
        return false;
      }
      int64_t count = 1;
      for (int64_t d : h.dims) {
        if (d < 0 || (d > 0 && count > (int64_t{1} << 40) / d)) {
          problem_ = "initializer '" + std::string(h.name) + "' has an impossible shape";
          return false;
        }
        count *= d;
      }
      if (ext->length >= 0 && ext->length != count * 4) {
        problem_ = "initializer '" + std::string(h.name) + "' has an external length that does not match its shape";
        return false;
      }
      const std::string path = dir_ + "/" + std::string(ext->location);
      auto [it, opened] = files_.try_emplace(path);
      if (opened) it->second.open(path, std::ios::binary | std::ios::ate);
      std::ifstream& in = it->second;
      in.clear();
      const std::streamoff size = in ? static_cast<std::streamoff>(in.seekg(0, std::ios::end).tellg()) : -1;
      if (size < 0 || ext->offset > static_cast<uint64_t>(size) || static_cast<uint64_t>(size) - ext->offset < static_cast<uint64_t>(count) * 4) {
        problem_ = "initializer '" + std::string(h.name) + "' lies outside '" + path + "'";
        return false;
      }
      values.resize(static_cast<size_t>(count));
      in.seekg(static_cast<std::streamoff>(ext->offset));
      if (!in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * 4))) {
        problem_ = "cannot read initializer '" + std::string(h.name) + "' from '" + path + "'";
        return false;
      }
    } else {
      auto v = onnx::FloatValues(bytes);
      if (!v) {
        problem_ = "initializer '" + std::string(h.name) + "' holds no readable float data";
        return false;
      }
      values = std::move(*v);
    }
    std::string tensor = onnx::HalfTensor(h.name, h.dims, ToHalf(values, &out_.clamped));
    out->clear();
    onnx::PutBytes(*out, 5, tensor);
    ++out_.tensors;
    return true;
  }

  // A Constant's or ConstantOfShape's float value as an fp16 tensor attribute.
  std::optional<std::string> HalfValue(const onnx::Node& n) {
    const onnx::Attribute* a = n.Attr("value");
    std::vector<float> values;
    std::vector<int64_t> dims;
    if (a) {
      auto h = onnx::ParseTensorHeader(a->tensor);
      auto v = onnx::FloatValues(a->tensor);
      if (!h || !v) return std::nullopt;
      values = std::move(*v);
      dims = h->dims;
    } else if (const onnx::Attribute* f = n.Attr("value_float"); f && f->f) {
      values = {*f->f};
    } else if (n.Is("ConstantOfShape")) {
      values = {0.0f};
      dims = {1};
    } else {
      return std::nullopt;  // value_floats: not written by the exporters this reads
    }
    ++out_.tensors;
    return onnx::TensorAttribute("value", onnx::HalfTensor("", dims, ToHalf(values, &out_.clamped)));
  }

  bool Emit() {
    std::unordered_map<size_t, size_t> node_at;
    for (size_t n = 0; n < g_.node_field.size(); ++n) node_at[g_.node_field[n]] = n;
    std::vector<std::string> owned(g_.fields.size());
    std::vector<std::string_view> pieces(g_.fields.size());
    // A float graph output computed in fp16 is written under a new name and cast back.
    std::unordered_map<std::string_view, std::string_view> renamed;
    for (const auto& [name, _] : g_.graph_outputs)
      if (TypeOf(name) == kFloat && NewType(name) == kFloat16) renamed[name] = Keep(std::string(name) + "/fp16");
    std::unordered_map<std::string, std::string_view> cast_of;  // "value|type" -> the cast's output
    for (size_t i = 0; i < g_.fields.size(); ++i) {
      const onnx::Field& f = g_.fields[i];
      pieces[i] = f.whole;
      if (f.wire != onnx::kBytes) continue;
      if (f.number == 13) {  // value_info: stale types, re-inferred by ONNX Runtime
        pieces[i] = {};
      } else if (f.number == 5) {
        auto h = onnx::ParseTensorHeader(f.bytes);
        if (h && h->data_type == kFloat && !g_.graph_inputs.count(h->name) && NewType(h->name) == kFloat16) {
          if (!ConvertInitializer(f.bytes, *h, &owned[i])) return false;
          pieces[i] = owned[i];
        }
      } else if (f.number == 1) {
        const size_t index = node_at.at(i);
        auto node = EmitNode(index, renamed, cast_of);
        if (!node) return false;
        if (!node->empty()) {
          owned[i] = std::move(*node);
          pieces[i] = owned[i];
        }
      }
    }
    out_.model = onnx::ReassembleGraph(g_, pieces);
    return true;
  }

  // The node's field (with the casts it needs before it and after it); empty when unchanged.
  std::optional<std::string> EmitNode(size_t index, const std::unordered_map<std::string_view, std::string_view>& renamed,
                                      std::unordered_map<std::string, std::string_view>& cast_of) {
    const onnx::Node& n = g_.nodes[index];
    const bool fp32 = fp32_node_[index];
    bool changed = false;
    std::string before, after;
    std::vector<std::string_view> inputs = n.inputs, outputs = n.outputs;
    // Inputs: a float value in the other precision goes through a Cast (Cast and Shape read any type).
    if (!n.Is("Cast") && !n.Is("Shape")) {
      for (auto& in : inputs) {
        if (in.empty() || TypeOf(in) != kFloat) continue;
        auto r = renamed.find(in);
        const std::string_view source = r == renamed.end() ? in : r->second;
        const int64_t have = r == renamed.end() ? NewType(in) : kFloat16;
        const int64_t want = fp32 ? kFloat : kFloat16;
        if (have == want) {
          if (source != in) in = source, changed = true;
          continue;
        }
        const std::string key = std::string(source) + (want == kFloat ? "|fp32" : "|fp16");
        auto c = cast_of.find(key);
        if (c == cast_of.end()) {
          const std::string_view cast = Keep(std::string(source) + (want == kFloat ? "/to_fp32" : "/to_fp16"));
          const std::string to = onnx::IntAttribute("to", want);
          before += onnx::EncodeNodeOutputs({source}, {cast}, cast, "Cast", "", {to});
          c = cast_of.emplace(key, cast).first;
          ++out_.casts;
        }
        in = c->second;
        changed = true;
      }
    } else {
      for (auto& in : inputs)
        if (auto r = renamed.find(in); r != renamed.end()) in = r->second, changed = true;
    }
    // Outputs that are float graph outputs computed in fp16: renamed, then cast back.
    for (auto& o : outputs) {
      auto r = renamed.find(o);
      if (r == renamed.end()) continue;
      const std::string to = onnx::IntAttribute("to", kFloat);
      after += onnx::EncodeNodeOutputs({r->second}, {o}, Keep(std::string(o) + "/to_fp32"), "Cast", "", {to});
      ++out_.casts;
      o = r->second;
      changed = true;
    }
    // Attributes that name a float type or hold a float value.
    std::vector<std::string> replaced;
    std::vector<std::string_view> attributes;
    for (const auto& a : n.attributes) attributes.push_back(a.bytes);
    auto set_attribute = [&](std::string_view name, std::string encoded) {
      replaced.push_back(std::move(encoded));
      bool found = false;
      for (size_t k = 0; k < n.attributes.size(); ++k)
        if (n.attributes[k].name == name) attributes[k] = replaced.back(), found = true;
      if (!found) attributes.push_back(replaced.back());
      changed = true;
    };
    replaced.reserve(4);
    const bool half_out = !n.outputs.empty() && TypeOf(n.outputs[0]) == kFloat && !fp32 &&
                          (!IsConstant(n.outputs[0]) || NewType(n.outputs[0]) == kFloat16);
    if (n.Is("Cast") && half_out) {
      set_attribute("to", onnx::IntAttribute("to", kFloat16));
    } else if ((n.Is("Constant") || n.Is("ConstantOfShape")) && half_out) {
      auto value = HalfValue(n);
      if (!value) {
        problem_ = std::string(n.op_type) + " node '" + std::string(n.name) + "' holds a float value this conversion cannot read";
        return std::nullopt;
      }
      if (n.Is("Constant")) {
        attributes.clear();
        replaced.push_back(std::move(*value));
        attributes.push_back(replaced.back());
        changed = true;
      } else {
        set_attribute("value", std::move(*value));
      }
    }
    if (!changed) return std::string();
    return before + onnx::EncodeNodeOutputs(inputs, outputs, n.name, n.op_type, n.domain, attributes) + after;
  }

  const onnx::Graph& g_;
  std::string dir_;
  std::unordered_map<std::string_view, int64_t> type_;
  std::vector<bool> fp32_node_;
  std::deque<std::string> names_;
  std::unordered_map<std::string, std::ifstream> files_;
  std::string problem_;
  Fp16Rewrite out_;
};

}  // namespace

Fp16Rewrite RewriteFloat16(const std::string& model_bytes, const std::string& model_dir) {
  auto parsed = onnx::ParseGraph(model_bytes);
  if (!parsed) {
    Fp16Rewrite r;
    r.problem = "the graph could not be parsed for conversion (or it holds control flow)";
    return r;
  }
  return Converter(*parsed, model_dir).Run();
}

}  // namespace m3
