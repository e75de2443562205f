#include "train/m3_loss.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "base/error.h"

namespace m3 {
namespace {

/// log-softmax of one row, in place (the max is subtracted first, so large logits are safe).
void LogSoftmax(std::vector<double>& z) {
  const double top = *std::max_element(z.begin(), z.end());
  double sum = 0;
  for (double v : z) sum += std::exp(v - top);
  const double log_sum = top + std::log(sum);
  for (double& v : z) v -= log_sum;
}

}  // namespace

M3LossResult M3Loss(const float* dense, const float* lex, const float* colbert, const int32_t* target, int64_t queries,
                    int64_t passages, const M3LossOptions& o) {
  if (!(o.temperature > 0) || !std::isfinite(o.temperature)) throw CoreError("ERR_INPUT", "m3Loss: temperature must be a positive number");
  if (queries < 1 || passages < 1) throw CoreError("ERR_INPUT", "m3Loss: needs at least one query and one passage");
  const int64_t n = queries * passages;
  for (const float* s : {dense, lex, colbert}) {
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(s[i])) throw CoreError("ERR_INPUT", "m3Loss: score " + std::to_string(i) + " is not finite");
    }
  }
  M3LossResult r;
  r.grad_dense.assign(n, 0.0);
  r.grad_lex.assign(n, 0.0);
  r.grad_colbert.assign(n, 0.0);
  const float* score[3] = {dense, lex, colbert};
  double* grad[3] = {r.grad_dense.data(), r.grad_lex.data(), r.grad_colbert.data()};
  const double w[3] = {o.w_dense, o.w_lex, o.w_colbert};
  const double t[3] = {o.t_dense, o.t_lex, o.t_colbert};
  double ce[3] = {0, 0, 0}, kd[3] = {0, 0, 0}, ce_inter = 0;
  // The final loss is (L + L') / 2 with L = (sum_m w_m CE_m + CE_inter) / 4 and
  // L' = sum_m w_m KD_m / 3 (or the loss is L alone), each a mean over queries.
  const double half = o.self_distill ? 0.5 : 1.0;
  const double scale_l = half / 4.0 / static_cast<double>(queries);
  const double scale_kd = half / 3.0 / static_cast<double>(queries);
  std::vector<double> z[3], inter(passages), teacher(passages);
  for (int64_t q = 0; q < queries; ++q) {
    const int32_t pos = target[q];
    if (pos < 0 || pos >= passages) {
      throw CoreError("ERR_INPUT", "m3Loss: target[" + std::to_string(q) + "] is " + std::to_string(pos) +
                                       ", outside the " + std::to_string(passages) + " passages");
    }
    std::fill(inter.begin(), inter.end(), 0.0);
    for (int m = 0; m < 3; ++m) {
      z[m].resize(passages);
      for (int64_t p = 0; p < passages; ++p) {
        z[m][p] = static_cast<double>(score[m][q * passages + p]) / o.temperature;
        inter[p] += t[m] * z[m][p];
      }
      LogSoftmax(z[m]);  // z[m] now holds log-probabilities
      ce[m] -= z[m][pos];
    }
    LogSoftmax(inter);
    ce_inter -= inter[pos];
    for (int64_t p = 0; p < passages; ++p) teacher[p] = std::exp(inter[p]);  // detached
    for (int m = 0; m < 3; ++m) {
      for (int64_t p = 0; p < passages; ++p) {
        const double prob = std::exp(z[m][p]);
        const double onehot = p == pos ? 1.0 : 0.0;
        kd[m] -= teacher[p] * z[m][p];
        // d/dz of: w_m CE_m (prob - onehot), the teacher's CE through its share t_m of s_inter
        // (teacher - onehot), and w_m KD_m (prob - teacher); then dz/ds = 1/temperature.
        double g = scale_l * (w[m] * (prob - onehot) + t[m] * (teacher[p] - onehot));
        if (o.self_distill) g += scale_kd * w[m] * (prob - teacher[p]);
        grad[m][q * passages + p] = g / o.temperature;
      }
    }
  }
  const double nq = static_cast<double>(queries);
  r.dense = ce[0] / nq;
  r.lex = ce[1] / nq;
  r.colbert = ce[2] / nq;
  r.inter = ce_inter / nq;
  r.distill_dense = kd[0] / nq;
  r.distill_lex = kd[1] / nq;
  r.distill_colbert = kd[2] / nq;
  r.l = (o.w_dense * r.dense + o.w_lex * r.lex + o.w_colbert * r.colbert + r.inter) / 4.0;
  r.l_distill = (o.w_dense * r.distill_dense + o.w_lex * r.distill_lex + o.w_colbert * r.distill_colbert) / 3.0;
  r.loss = o.self_distill ? (r.l + r.l_distill) / 2.0 : r.l;
  return r;
}

}  // namespace m3
