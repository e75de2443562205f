// Fuzz target: the protobuf wire decoder and the ONNX graph view built on it (Fields,
// ParseGraph, ParseTensorHeader, ScalarOf, SoleProducer, Reassemble) and the fp16 conversion. These return nullopt
// for malformed input instead of throwing, so any exception is a finding. A graph that parses
// is reassembled with every node kept, and with every node dropped: both must parse again,
// with the same nodes and with none; one the fp16 conversion accepts parses again with its nodes
// and the casts it added. Seeds: the demo model's graph, a cut-down copy of it and
// small hand-built models.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "graph/fp16_rewrite.h"
#include "graph/graph_facts.h"
#include "graph/onnx_wire.h"
#include "fuzz/fuzz_support.h"

namespace {

using namespace m3::onnx;

void CheckGraph(const std::string& model) {
  const auto graph = ParseGraph(model);
  m3::fuzz::Require(m3::PositionTableRows(model) >= 0, "position table rows");
  if (!graph) return;
  const Graph& g = *graph;
  m3::fuzz::Require(g.graph_index < g.model.size() && g.nodes.size() == g.node_field.size(), "graph indices");
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    m3::fuzz::Require(g.node_field[i] < g.fields.size(), "node field index");
    for (const auto& input : g.nodes[i].inputs) {
      if (const auto producer = SoleProducer(g, input, i)) {
        m3::fuzz::Require(*producer < g.nodes.size(), "SoleProducer names no node");
      }
    }
    for (const Attribute& attribute : g.nodes[i].attributes) {
      if (!attribute.tensor.empty()) {
        ParseTensorHeader(attribute.tensor);
        ScalarOf(attribute.tensor);
      }
    }
  }
  for (const auto& [name, bytes] : g.initializer_bytes) {
    ScalarOf(bytes);
    FloatValues(bytes);
    ParseExternalData(bytes);
  }

  // External data is looked for in a folder that does not exist: those graphs are refused.
  const m3::Fp16Rewrite half = m3::RewriteFloat16(model, "/nonexistent-fuzz-dir");
  m3::fuzz::Require(half.model.empty() != half.problem.empty(), "the fp16 conversion gives a model or a reason");
  if (!half.model.empty()) {
    const auto converted = ParseGraph(half.model);
    m3::fuzz::Require(converted.has_value(), "an fp16 graph does not parse");
    m3::fuzz::Require(converted->nodes.size() == g.nodes.size() + static_cast<size_t>(half.casts), "the fp16 graph's node count");
  }

  const std::vector<std::string> no_replacements(g.nodes.size());
  const std::string kept = Reassemble(g, std::vector<Action>(g.nodes.size(), Action::kKeep), no_replacements, "fuzz.domain");
  const auto kept_graph = ParseGraph(kept);
  m3::fuzz::Require(kept_graph.has_value(), "a reassembled graph with every node kept does not parse");
  m3::fuzz::Require(kept_graph->nodes.size() == g.nodes.size(), "reassembly changed the node count");
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    m3::fuzz::Require(kept_graph->nodes[i].whole == g.nodes[i].whole, "reassembly changed node " + std::to_string(i));
  }
  const std::string dropped = Reassemble(g, std::vector<Action>(g.nodes.size(), Action::kDrop), no_replacements, "fuzz.domain");
  const auto dropped_graph = ParseGraph(dropped);
  m3::fuzz::Require(dropped_graph.has_value() && dropped_graph->nodes.empty(),
                    "a reassembled graph with every node dropped does not parse to an empty graph");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string model(reinterpret_cast<const char*>(data), size);
  return m3::fuzz::RunCase("ERR_MODEL_FILES", [&] {
    if (const auto fields = Fields(model)) {
      size_t covered = 0;
      for (const Field& field : *fields) covered += field.whole.size();
      m3::fuzz::Require(covered == size, "the fields of a message do not add up to it");
    }
    ParseTensorHeader(model);
    ScalarOf(model);
    CheckGraph(model);
  });
}
