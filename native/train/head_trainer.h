// Fine-tuning BGE-M3's sparse and ColBERT heads on a frozen encoder: the heads' forward pass on
// cached last_hidden_state rows, the M3 objective (m3_loss.h), analytic gradients back through
// MaxSim, the L2 normalisation, ReLU and the max-per-token rule, and Adam. Pure C++, no N-API.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "train/m3_loss.h"

namespace m3 {

/// Read-only hidden-state rows of the training texts: rows * hidden floats, text i owning rows
/// [offsets[i], offsets[i+1]) (its tokens, <s> first, </s> last) whose token ids are ids[...].
class HiddenStateCache {
 public:
  /// Maps `path` (raw little-endian fp32, exactly rows * hidden floats). Throws CoreError
  /// (ERR_INPUT) when the file is missing or its size does not match.
  static std::unique_ptr<HiddenStateCache> Open(const std::string& path, int64_t hidden, std::vector<int32_t> ids,
                                                std::vector<uint32_t> offsets);
  ~HiddenStateCache();
  HiddenStateCache(const HiddenStateCache&) = delete;
  HiddenStateCache& operator=(const HiddenStateCache&) = delete;

  int64_t hidden() const { return hidden_; }
  int64_t texts() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t length(int64_t text) const { return offsets_[text + 1] - offsets_[text]; }
  const float* rows(int64_t text) const { return data_ + static_cast<size_t>(offsets_[text]) * hidden_; }
  const int32_t* ids(int64_t text) const { return ids_.data() + offsets_[text]; }

 private:
  HiddenStateCache() = default;
  int64_t hidden_ = 0;
  std::vector<int32_t> ids_;
  std::vector<uint32_t> offsets_;
  const float* data_ = nullptr;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  std::vector<float> owned_;  // where the file could not be mapped
};

/// The trainable parameters, flat: [sparse weight (hidden), sparse bias (1),
/// colbert weight (dim x hidden, row-major as torch's Linear), colbert bias (dim)].
struct HeadLayout {
  int64_t hidden = 0, dim = 0;
  int64_t sparse_w() const { return 0; }
  int64_t sparse_b() const { return hidden; }
  int64_t colbert_w() const { return hidden + 1; }
  int64_t colbert_b() const { return hidden + 1 + dim * hidden; }
  int64_t size() const { return hidden + 1 + dim * hidden + dim; }
};

/// One training step's settings.
struct StepOptions {
  M3LossOptions loss;
  bool train_sparse = true, train_colbert = true;  // a frozen head gets no gradient and no update
  bool update = true;                              // false: compute loss and gradient only
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;  // AdamW
};

struct StepResult {
  M3LossResult loss;           // its grad_* are d(loss)/d(score)
  std::vector<float> grad;     // d(loss)/d(parameters), HeadLayout order (only when !update)
  double grad_norm = 0;        // L2 norm of the gradient
};

class HeadTrainer {
 public:
  /// `params` holds HeadLayout{cache.hidden(), dim}.size() floats. `threads` >= 1.
  HeadTrainer(std::shared_ptr<const HiddenStateCache> cache, int64_t dim, std::vector<float> params, int threads);
  ~HeadTrainer();

  /// One group: queries[q] and passages[p] are text indices of the cache; target[q] is the
  /// index in `passages` of query q's positive. Every query is scored against every passage.
  /// Throws CoreError(ERR_INPUT) for indices out of range.
  StepResult Step(const std::vector<int32_t>& queries, const std::vector<int32_t>& passages,
                  const std::vector<int32_t>& target, const StepOptions& options);

  const HeadLayout& layout() const { return layout_; }
  const std::vector<float>& params() const { return params_; }
  const std::vector<float>& adam_m() const { return m_; }
  const std::vector<float>& adam_v() const { return v_; }
  int64_t adam_steps() const { return t_; }
  /// Restores a checkpoint: parameters and Adam's moments (each layout().size() floats) and step count.
  void SetState(std::vector<float> params, std::vector<float> m, std::vector<float> v, int64_t t);

 private:
  void Adam(const std::vector<float>& grad, const StepOptions& o);


  std::shared_ptr<const HiddenStateCache> cache_;
  HeadLayout layout_;
  std::vector<float> params_, m_, v_;
  int64_t t_ = 0;
  int threads_ = 1;
  // Buffers kept from step to step: fresh megabyte-sized allocations would be fresh pages, and
  // faulting them in costs more than the arithmetic that fills them.
  struct Scratch;
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace m3
