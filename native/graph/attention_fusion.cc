#include "graph/attention_fusion.h"

#include <algorithm>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "graph/onnx_wire.h"

namespace m3 {

using onnx::Action;

AttentionFusion FuseAttentionBlocks(const std::string& model_bytes, bool bf16) {
  AttentionFusion result;
  auto parsed = onnx::ParseGraph(model_bytes);
  if (!parsed) return result;
  const onnx::Graph& g = *parsed;
  for (const auto& n : g.nodes)
    if (n.op_type == kFusedAttentionOp && n.domain == kFusedAttentionDomain) return result;  // already rewritten
  const std::vector<onnx::Node>& nodes = g.nodes;
  const int64_t opset = g.opset;
  const auto& graph_outputs = g.graph_outputs;
  std::unordered_map<std::string_view, float> scalars;
  for (const auto& [name, bytes] : g.initializer_bytes)
    if (auto v = onnx::ScalarOf(bytes)) scalars[name] = *v;
  for (const auto& n : nodes) {
    if (!n.Is("Constant") || n.outputs.size() != 1) continue;
    if (const onnx::Attribute* a = n.Attr("value")) {
      if (auto v = onnx::ScalarOf(a->tensor)) scalars[n.outputs[0]] = *v;
    } else if (const onnx::Attribute* a = n.Attr("value_float"); a && a->f) {
      scalars[n.outputs[0]] = *a->f;
    }
  }
  auto consumers = [&](std::string_view name) -> const std::vector<size_t>& {
    static const std::vector<size_t> none;
    auto it = g.consumers.find(name);
    return it == g.consumers.end() ? none : it->second;
  };
  auto sole = [&](std::string_view name, size_t reader) { return onnx::SoleProducer(g, name, reader); };

  std::vector<Action> action(nodes.size(), Action::kKeep);
  std::vector<std::string> replacement(nodes.size());
  for (size_t s = 0; s < nodes.size(); ++s) {
    const onnx::Node& softmax = nodes[s];
    if (!softmax.Is("Softmax") || softmax.inputs.size() != 1 || softmax.outputs.size() != 1) continue;
    const onnx::Attribute* axis = softmax.Attr("axis");
    const int64_t ax = axis && axis->i ? *axis->i : (opset >= 13 ? -1 : 1);
    if (ax != -1 && ax != 3) continue;  // rank 4: axis 3 is the last (also before opset 13)
    // Softmax's only reader: the MatMul with v.
    const auto& readers = consumers(softmax.outputs[0]);
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
        const float c = scalars.at(nodes[*x].inputs[1]);
        if (c == 0.0f) return std::nullopt;
        sc.scale = 1.0f / c;
        sc.chain.push_back(*x);
        x = sole(nodes[*x].inputs[0], *x);
      } else if (nodes[*x].Is("Mul") && nodes[*x].inputs.size() == 2) {
        const onnx::Node& mul = nodes[*x];
        const int side = scalars.count(mul.inputs[1]) ? 1 : scalars.count(mul.inputs[0]) ? 0 : -1;
        if (side < 0) return std::nullopt;
        sc.scale = scalars.at(mul.inputs[side]);
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
    bool free = action[m2] == Action::kKeep;
    for (size_t c : chain) free = free && action[c] == Action::kKeep;
    if (!free) continue;
    for (size_t c : chain) action[c] = Action::kDrop;
    action[s] = Action::kDrop;
    action[m2] = Action::kReplace;
    std::vector<std::string_view> inputs = {nodes[m1].inputs[0], nodes[m1].inputs[1], nodes[m2].inputs[1]};
    if (!mask.empty()) inputs.push_back(mask);
    std::vector<std::string> attributes = {onnx::FloatAttribute("scale", scale)};
    if (bf16) attributes.push_back(onnx::IntAttribute("bf16", 1));
    // Unique even where the exporter left node names empty.
    replacement[m2] = onnx::EncodeNode(inputs, nodes[m2].outputs[0],
                                       std::string(nodes[m2].name) + "/FusedAttention_" + std::to_string(result.fused),
                                       kFusedAttentionOp, kFusedAttentionDomain, attributes);
    ++result.fused;
  }
  if (result.fused == 0) return result;
  result.model = onnx::Reassemble(g, action, replacement, kFusedAttentionDomain);
  return result;
}

}  // namespace m3
