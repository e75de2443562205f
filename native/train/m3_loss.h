// BGE-M3's training objective (docs/semantics.md, "Training"): InfoNCE per retrieval mode, the
// teacher score, and self-knowledge distillation, with analytic gradients with respect to the
// score matrices (what training the heads back-propagates). Pure C++, no N-API.
#pragma once
#include <cstdint>
#include <vector>

namespace m3 {

/// The objective's weights; the defaults are the paper's.
struct M3LossOptions {
  double temperature = 0.02;
  double w_dense = 1.0, w_lex = 0.1, w_colbert = 1.0;                // mode weights in L and L'
  double t_dense = 1.0, t_lex = 0.3, t_colbert = 1.0;                // teacher: s_inter mix
  bool self_distill = true;                                           // false: the loss is L alone
};

/// Loss terms (means over queries) and d(loss)/d(score) for each mode, row-major [queries x passages].
struct M3LossResult {
  double loss = 0, l = 0, l_distill = 0;
  double dense = 0, lex = 0, colbert = 0, inter = 0;                  // InfoNCE per mode and teacher
  double distill_dense = 0, distill_lex = 0, distill_colbert = 0;     // soft cross-entropy per mode
  std::vector<double> grad_dense, grad_lex, grad_colbert;
};

/// Scores of `queries` queries against `passages` in-batch passages per mode (row-major);
/// target[q] is the index of query q's positive passage. Throws CoreError(ERR_INPUT) on a
/// target out of range, a non-positive temperature or a non-finite score.
M3LossResult M3Loss(const float* dense, const float* lex, const float* colbert, const int32_t* target, int64_t queries,
                    int64_t passages, const M3LossOptions& options);

}  // namespace m3
