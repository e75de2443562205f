#include "graph/graph_facts.h"

#include <unordered_set>
#include <vector>

#include "graph/onnx_wire.h"

namespace m3 {

int64_t PositionTableRows(const std::string& model_bytes) {
  const auto parsed = onnx::ParseGraph(model_bytes);
  if (!parsed) return 0;
  const onnx::Graph& g = *parsed;
  // Position ids come from the input through a CumSum a few nodes up; word ids are the input
  // itself and token types a constant, so only the position table's Gather meets a CumSum.
  auto fed_by_cumsum = [&](std::string_view start) {
    std::vector<std::string_view> frontier = {start};
    std::unordered_set<std::string_view> seen;
    for (int depth = 0; depth < 8 && !frontier.empty(); ++depth) {
      std::vector<std::string_view> next;
      for (std::string_view name : frontier) {
        const auto it = g.producer.find(name);
        if (it == g.producer.end() || !seen.insert(name).second) continue;
        const onnx::Node& node = g.nodes[it->second];
        if (node.Is("CumSum")) return true;
        next.insert(next.end(), node.inputs.begin(), node.inputs.end());
      }
      frontier.swap(next);
    }
    return false;
  };
  for (const onnx::Node& node : g.nodes) {
    if (!node.Is("Gather") || node.inputs.size() < 2) continue;
    const auto table = g.initializers.find(node.inputs[0]);
    if (table == g.initializers.end() || table->second.dims.size() != 2 || table->second.dims[0] <= 0) continue;
    if (fed_by_cumsum(node.inputs[1])) return table->second.dims[0];
  }
  return 0;
}

}  // namespace m3
