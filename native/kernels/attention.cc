#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace m3 {

int64_t AttentionRowsPerUnit(int64_t kv_len) {
  constexpr int64_t kScoreFloats = 32 * 1024;  // 128 KiB of scores per block
  const int64_t rows = kScoreFloats / std::max<int64_t>(1, kv_len);
  return std::clamp<int64_t>(rows / 6 * 6, 6, 96);
}

int64_t AttentionUnitCount(const AttentionArgs& args) {
  const int64_t rows = AttentionRowsPerUnit(args.kv_len);
  return args.batch * args.heads * ((args.q_len + rows - 1) / rows);
}

int64_t AttentionScoreStride(int64_t kv_len) {
  const int64_t ld = (kv_len + 15) / 16 * 16;
  return ld % 256 == 0 ? ld + 16 : ld;
}

size_t AttentionScratchFloats(const AttentionArgs& args) {
  const int64_t rows = std::min(AttentionRowsPerUnit(args.kv_len), args.q_len);
  constexpr int64_t kPackedKeyBlock = 48;  // attention_avx512.cc's key block
  return static_cast<size_t>(rows * (AttentionScoreStride(args.kv_len) + 1) + args.head_dim * kPackedKeyBlock);
}

void AttentionRunUnit(IsaTier tier, const AttentionArgs& args, int64_t unit, float* scratch) {
  const int64_t per_head_rows = AttentionRowsPerUnit(args.kv_len);
  const int64_t blocks = (args.q_len + per_head_rows - 1) / per_head_rows;
  const int64_t bh = unit / blocks;
  const int64_t b = bh / args.heads, h = bh % args.heads;
  const int64_t row_begin = (unit % blocks) * per_head_rows;
  attention::Block block;
  block.q = args.q + (bh * args.q_len + row_begin) * args.head_dim;
  block.kt = args.kt + bh * args.head_dim * args.kv_len;
  block.v = args.v + bh * args.kv_len * args.v_dim;
  block.mask = args.mask ? args.mask + b * args.mask_stride_b + h * args.mask_stride_h + row_begin * args.mask_stride_q
                         : nullptr;
  block.mask_stride_q = args.mask_stride_q;
  block.out = args.out + (bh * args.q_len + row_begin) * args.v_dim;
  block.rows = std::min(per_head_rows, args.q_len - row_begin);
  block.kv_len = args.kv_len;
  block.head_dim = args.head_dim;
  block.v_dim = args.v_dim;
  block.scale = args.scale;
  if (tier > DetectedTier()) tier = DetectedTier();
  if (tier == IsaTier::kAvx512) attention::BlockAvx512(block, scratch);
  else attention::BlockSerial(block, scratch);
}

void AttentionForwardOn(IsaTier tier, const AttentionArgs& args) {
  std::vector<float> scratch(AttentionScratchFloats(args));
  const int64_t units = AttentionUnitCount(args);
  for (int64_t u = 0; u < units; ++u) AttentionRunUnit(tier, args, u, scratch.data());
}

namespace attention {

// The oracle: scores, then the exact softmax of each row (max first), then the weighted sum.
void BlockSerial(const Block& blk, float* scratch) {
  float* scores = scratch;
  for (int64_t i = 0; i < blk.rows; ++i) {
    float* s = scores + i * blk.kv_len;
    const float* q = blk.q + i * blk.head_dim;
    const float* mask = blk.mask ? blk.mask + i * blk.mask_stride_q : nullptr;
    float row_max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < blk.kv_len; ++j) {
      float dot = 0.0f;
      for (int64_t k = 0; k < blk.head_dim; ++k) dot += q[k] * blk.kt[k * blk.kv_len + j];
      s[j] = dot * blk.scale + (mask ? mask[j] : 0.0f);
      row_max = std::max(row_max, s[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < blk.kv_len; ++j) {
      s[j] = std::exp(s[j] - row_max);
      sum += s[j];
    }
    float* o = blk.out + i * blk.v_dim;
    std::fill(o, o + blk.v_dim, 0.0f);
    for (int64_t j = 0; j < blk.kv_len; ++j) {
      const float p = s[j] / sum;
      const float* v = blk.v + j * blk.v_dim;
      for (int64_t c = 0; c < blk.v_dim; ++c) o[c] += p * v[c];
    }
  }
}

}  // namespace attention
}  // namespace m3
