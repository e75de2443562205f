#include "graph/linear_rewrite.h"

#include <optional>
#include <string_view>
#include <vector>

#include "graph/attention_fusion.h"
#include "graph/onnx_wire.h"

namespace m3 {

LinearRewrite RewriteLinearsBf16(const std::string& model_bytes) {
  LinearRewrite result;
  auto parsed = onnx::ParseGraph(model_bytes);
  if (!parsed) return result;
  const onnx::Graph& g = *parsed;
  // A constant weight: an initializer the caller cannot override (not also a graph input).
  auto initializer = [&](std::string_view name, size_t rank) -> const onnx::TensorHeader* {
    auto it = g.initializers.find(name);
    if (it == g.initializers.end() || g.graph_inputs.count(name)) return nullptr;
    const onnx::TensorHeader& t = it->second;
    if (t.data_type != 1 || t.dims.size() != rank) return nullptr;
    for (int64_t d : t.dims)
      if (d <= 0 || d > (int64_t{1} << 31)) return nullptr;
    return &t;
  };
  // The weight a product reads: an initializer [in, out], or one stored [out, in] and read through
  // a Transpose (an export without constant folding); `transposed` says which.
  struct Weight {
    std::string_view name;
    int64_t in = 0, out = 0;
    bool transposed = false;
    std::optional<size_t> transpose;  // the Transpose node, when the product is its only reader
  };
  std::vector<onnx::Action> action(g.nodes.size(), onnx::Action::kKeep);
  auto weight = [&](std::string_view name, size_t reader, bool transposed) -> std::optional<Weight> {
    if (const onnx::TensorHeader* t = initializer(name, 2))
      return Weight{name, transposed ? t->dims[1] : t->dims[0], transposed ? t->dims[0] : t->dims[1], transposed, {}};
    if (transposed) return std::nullopt;
    auto p = g.producer.find(name);
    if (p == g.producer.end()) return std::nullopt;
    const onnx::Node& tr = g.nodes[p->second];
    if (!tr.Is("Transpose") || tr.inputs.size() != 1 || tr.outputs.size() != 1 || action[p->second] != onnx::Action::kKeep)
      return std::nullopt;
    const onnx::Attribute* perm = tr.Attr("perm");
    if (perm && perm->ints != std::vector<int64_t>{1, 0}) return std::nullopt;
    const onnx::TensorHeader* t = initializer(tr.inputs[0], 2);
    if (!t) return std::nullopt;
    return Weight{tr.inputs[0], t->dims[1], t->dims[0], true, onnx::SoleProducer(g, name, reader)};
  };
  auto is_bias = [&](std::string_view name, int64_t out) {
    const onnx::TensorHeader* b = initializer(name, 1);
    return b && b->dims[0] == out;
  };

  std::vector<std::string> replacement(g.nodes.size());
  for (size_t m = 0; m < g.nodes.size(); ++m) {
    const onnx::Node& mm = g.nodes[m];
    if (mm.outputs.size() != 1 || action[m] != onnx::Action::kKeep || mm.inputs.empty() || g.initializers.count(mm.inputs[0]))
      continue;
    std::optional<Weight> w;
    std::vector<std::string_view> inputs;
    std::string_view output = mm.outputs[0];
    size_t at = m;
    if (mm.Is("MatMul") && mm.inputs.size() == 2) {
      w = weight(mm.inputs[1], m, false);
      if (!w) continue;
      inputs = {mm.inputs[0], w->name};
      // A bias added to the product alone (either side of the Add) joins the node.
      auto readers = g.consumers.find(mm.outputs[0]);
      if (readers != g.consumers.end() && readers->second.size() == 1 && !g.graph_outputs.count(mm.outputs[0])) {
        const size_t a = readers->second[0];
        const onnx::Node& add = g.nodes[a];
        if (add.Is("Add") && add.inputs.size() == 2 && add.outputs.size() == 1 && action[a] == onnx::Action::kKeep) {
          const std::string_view other = add.inputs[0] == mm.outputs[0] ? add.inputs[1] : add.inputs[0];
          if (other != mm.outputs[0] && is_bias(other, w->out)) {
            inputs.push_back(other);
            output = add.outputs[0];
            action[m] = onnx::Action::kDrop;
            at = a;
          }
        }
      }
    } else if (mm.Is("Gemm") && (mm.inputs.size() == 2 || mm.inputs.size() == 3)) {
      // Y = A · op(B) + C with alpha = beta = 1, A as is, C a bias of B's width (or none).
      const onnx::Attribute* alpha = mm.Attr("alpha");
      const onnx::Attribute* beta = mm.Attr("beta");
      const onnx::Attribute* trans_a = mm.Attr("transA");
      const onnx::Attribute* trans_b = mm.Attr("transB");
      if ((alpha && alpha->f && *alpha->f != 1.0f) || (beta && beta->f && *beta->f != 1.0f) || (trans_a && trans_a->i && *trans_a->i != 0))
        continue;
      w = weight(mm.inputs[1], m, trans_b && trans_b->i && *trans_b->i != 0);
      if (!w) continue;
      inputs = {mm.inputs[0], w->name};
      if (mm.inputs.size() == 3 && !mm.inputs[2].empty()) {
        if (!is_bias(mm.inputs[2], w->out)) continue;
        inputs.push_back(mm.inputs[2]);
      }
    } else {
      continue;
    }
    if (w->transpose) action[*w->transpose] = onnx::Action::kDrop;
    action[at] = onnx::Action::kReplace;
    std::vector<std::string> attributes;
    if (w->transposed) attributes.push_back(onnx::IntAttribute("trans_b", 1));
    // Unique even where the exporter left node names empty.
    replacement[at] = onnx::EncodeNode(inputs, output, std::string(mm.name) + "/LinearBf16_" + std::to_string(result.layers),
                                       kLinearBf16Op, kFusedAttentionDomain, attributes);
    ++result.layers;
  }
  if (result.layers == 0) return result;
  result.model = onnx::Reassemble(g, action, replacement, kFusedAttentionDomain);
  return result;
}

}  // namespace m3
