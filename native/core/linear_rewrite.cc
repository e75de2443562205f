#include "core/linear_rewrite.h"

#include <optional>
#include <string_view>
#include <vector>

#include "core/attention_fusion.h"
#include "core/onnx_wire.h"

namespace m3 {

LinearRewrite RewriteLinearsBf16(const std::string& model_bytes) {
  LinearRewrite result;
  auto parsed = onnx::ParseGraph(model_bytes);
  if (!parsed) return result;
  const onnx::Graph& g = *parsed;
  // A constant weight: an initializer the caller cannot override (not also a graph input).
  auto weight = [&](std::string_view name, size_t rank) -> const onnx::TensorHeader* {
    auto it = g.initializers.find(name);
    if (it == g.initializers.end() || g.graph_inputs.count(name)) return nullptr;
    const onnx::TensorHeader& t = it->second;
    if (t.data_type != 1 || t.dims.size() != rank) return nullptr;
    for (int64_t d : t.dims)
      if (d <= 0 || d > (int64_t{1} << 31)) return nullptr;
    return &t;
  };
  std::vector<onnx::Action> action(g.nodes.size(), onnx::Action::kKeep);
  std::vector<std::string> replacement(g.nodes.size());
  for (size_t m = 0; m < g.nodes.size(); ++m) {
    const onnx::Node& mm = g.nodes[m];
    if (!mm.Is("MatMul") || mm.inputs.size() != 2 || mm.outputs.size() != 1) continue;
    const onnx::TensorHeader* w = weight(mm.inputs[1], 2);
    if (!w || g.initializers.count(mm.inputs[0])) continue;
    std::vector<std::string_view> inputs = {mm.inputs[0], mm.inputs[1]};
    std::string_view output = mm.outputs[0];
    // A bias added to the product alone (either side of the Add) joins the node.
    size_t at = m;
    auto readers = g.consumers.find(mm.outputs[0]);
    if (readers != g.consumers.end() && readers->second.size() == 1 && !g.graph_outputs.count(mm.outputs[0])) {
      const size_t a = readers->second[0];
      const onnx::Node& add = g.nodes[a];
      if (add.Is("Add") && add.inputs.size() == 2 && add.outputs.size() == 1 && action[a] == onnx::Action::kKeep) {
        const std::string_view other = add.inputs[0] == mm.outputs[0] ? add.inputs[1] : add.inputs[0];
        const onnx::TensorHeader* b = weight(other, 1);
        if (b && b->dims[0] == w->dims[1] && other != mm.outputs[0]) {
          inputs.push_back(other);
          output = add.outputs[0];
          action[m] = onnx::Action::kDrop;
          at = a;
        }
      }
    }
    action[at] = onnx::Action::kReplace;
    // Unique even where the exporter left node names empty.
    replacement[at] = onnx::EncodeNode(inputs, output, std::string(mm.name) + "/LinearBf16_" + std::to_string(result.layers),
                                       kLinearBf16Op, kFusedAttentionDomain, {});
    ++result.layers;
  }
  if (result.layers == 0) return result;
  result.model = onnx::Reassemble(g, action, replacement, kFusedAttentionDomain);
  return result;
}

}  // namespace m3
