// The heads stage of an encode: from one batch's graph outputs to its texts' rows. Three
// implementations of one interface:
//   GraphHeads  the heads are baked into the graph (dense/sparse/colbert outputs): rows copied;
//   CpuHeads    the graph outputs last_hidden_state (BAAI layout): pooling and the heads here,
//               in parallel over the batch's texts;
//   GpuHeads    (core/heads_gpu.h) the same on the GPU, where a CUDA session left the hidden
//               states, falling back to CpuHeads for a batch the device cannot take.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <onnxruntime_cxx_api.h>

#include "core/encode_request.h"
#include "core/encode_result.h"
#include "core/encoder_session.h"
#include "core/m3_heads.h"

namespace m3 {

/// The run stage for one padded batch: runs the session with its outputs in device memory or on
/// the host, checked against the layout seen at load and timed into the result.
using BatchRun = std::function<std::vector<Ort::Value>(bool device_outputs)>;

/// One batch as the heads stage sees it.
struct HeadsBatch {
  const PaddedBatch& batch;
  ResultWriter& out;
  const BatchRun& run;
};

class Heads {
 public:
  virtual ~Heads() = default;
  /// The graph outputs a request for `outputs` runs.
  virtual std::vector<const char*> GraphOutputs(OutputSet outputs) const = 0;
  /// Runs the batch (through `run`) and writes each of its texts' requested rows.
  virtual void Apply(const HeadsBatch& batch) const = 0;
  /// Where the heads run: "cpu" or "cuda".
  virtual const char* device() const { return "cpu"; }
};

/// The graph outputs for `outputs`: last_hidden_state for a hidden-state graph, else the baked
/// heads' outputs that were asked for, in dense, sparse, colbert order.
std::vector<const char*> GraphOutputNames(const EncoderSession& session, OutputSet outputs);

/// Heads baked into the graph: its dense, sparse and colbert outputs are the rows.
class GraphHeads : public Heads {
 public:
  GraphHeads(const EncoderSession& session, int64_t dim) : session_(session), dim_(dim) {}
  std::vector<const char*> GraphOutputs(OutputSet outputs) const override { return GraphOutputNames(session_, outputs); }
  void Apply(const HeadsBatch& batch) const override;

 private:
  const EncoderSession& session_;
  int64_t dim_;
};

/// The BAAI layout's heads on the CPU: dense = normalised CLS row, sparse = ReLU(h . w + b) per
/// token then max per id, ColBERT = normalise(h W^T + b) for every token after CLS.
class CpuHeads : public Heads {
 public:
  /// `threads`: the most threads one batch's heads use (the session's intra-op thread count).
  CpuHeads(const EncoderSession& session, M3Heads weights, int threads)
      : session_(session), weights_(std::move(weights)), threads_(threads) {}
  std::vector<const char*> GraphOutputs(OutputSet) const override { return {session_.hidden_output().c_str()}; }
  void Apply(const HeadsBatch& batch) const override;
  /// The heads on outputs already run to the host.
  void ApplyTo(const std::vector<Ort::Value>& out, const HeadsBatch& batch) const;

  const M3Heads& weights() const { return weights_; }
  int64_t hidden() const { return weights_.hidden; }
  int64_t dim() const { return weights_.colbert_dim; }

 private:
  const EncoderSession& session_;
  M3Heads weights_;
  int threads_;
};

}  // namespace m3
