#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/quantize.h"

namespace m3 {

int64_t AttentionRowsPerUnit(int64_t kv_len) {
  constexpr int64_t kScoreFloats = 32 * 1024;  // 128 KiB of scores per block
  const int64_t rows = kScoreFloats / std::clamp<int64_t>(kv_len, 1, kAttentionKeyChunk);
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
  const int64_t chunk = std::min(args.kv_len, kAttentionKeyChunk);
  // Scores of a chunk and three floats per row, the packed key block, the running outputs; the
  // serial kernel's full score rows fit in the same.
  const int64_t vector =
      rows * (AttentionScoreStride(chunk) + 3) + args.head_dim * attention::kAttentionPackedKeys + rows * args.v_dim;
  return static_cast<size_t>(std::max(vector, rows * args.kv_len));
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
  block.bf16 = args.bf16;
  if (tier > DetectedTier()) tier = DetectedTier();
  if (args.bf16) {
    // Every tier gives the same rounding: the vector kernel where the CPU has BF16, else the oracle.
    if (tier == IsaTier::kAvx512 && DetectCpuFeatures().avx512_bf16) attention::RunBlock(block, attention::OpsAvx512Bf16(), scratch);
    else attention::BlockSerial(block, scratch);
  } else if (tier == IsaTier::kAvx512) attention::RunBlock(block, attention::OpsAvx512(), scratch);
  else if (tier == IsaTier::kAvx2) attention::RunBlock(block, attention::OpsAvx2(), scratch);
  else attention::BlockSerial(block, scratch);
}

void AttentionForwardOn(IsaTier tier, const AttentionArgs& args) {
  std::vector<float> scratch(AttentionScratchFloats(args));
  const int64_t units = AttentionUnitCount(args);
  for (int64_t u = 0; u < units; ++u) AttentionRunUnit(tier, args, u, scratch.data());
}

namespace attention {

void RunBlock(const Block& b, const BlockOps& ops, float* scratch) {
  // Scratch (AttentionScratchFloats): scores of one key chunk (rows x ld), three floats per row,
  // the packed kt slice, and for several chunks the rows' unnormalised outputs.
  const int64_t chunk = std::min(b.kv_len, kAttentionKeyChunk);
  const int64_t ld = AttentionScoreStride(chunk);
  float* scores = scratch;
  float* row_max = scores + b.rows * ld;
  float* row_sum = row_max + b.rows;
  float* factor = row_sum + b.rows;
  float* kpack = factor + b.rows;
  if (b.kv_len == chunk) {
    // All keys at once: the exact softmax (max first), as the serial oracle computes it.
    ops.scores(b, 0, b.kv_len, scores, ld, kpack);
    for (int64_t r = 0; r < b.rows; ++r) {
      float* s = scores + r * ld;
      factor[r] = 1.0f / ops.exp_sum(s, b.kv_len, ops.row_max(s, b.kv_len));
    }
    ops.weighted(b, scores, ld, 0, b.kv_len, factor, b.out, b.v_dim, false);
    return;
  }
  // Longer rows: the online softmax over key chunks. Each chunk's weights are taken against the
  // running maximum; what was summed before a new maximum is rescaled by e^(old - new).
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  float* acc = kpack + b.head_dim * kAttentionPackedKeys;
  std::fill(row_max, row_max + b.rows, kNone);
  std::fill(row_sum, row_sum + b.rows, 0.0f);
  std::fill(acc, acc + b.rows * b.v_dim, 0.0f);
  for (int64_t j0 = 0; j0 < b.kv_len; j0 += chunk) {
    const int64_t n = std::min(chunk, b.kv_len - j0);
    ops.scores(b, j0, n, scores, ld, kpack);
    for (int64_t r = 0; r < b.rows; ++r) {
      float* s = scores + r * ld;
      const float m = std::max(row_max[r], ops.row_max(s, n));
      factor[r] = row_max[r] == kNone ? 0.0f : ops.exp(row_max[r] - m);
      row_sum[r] = row_sum[r] * factor[r] + ops.exp_sum(s, n, m);
      row_max[r] = m;
    }
    ops.weighted(b, scores, ld, j0, n, factor, acc, b.v_dim, true);
  }
  for (int64_t r = 0; r < b.rows; ++r) {
    const float inv = 1.0f / row_sum[r];
    for (int64_t c = 0; c < b.v_dim; ++c) b.out[r * b.v_dim + c] = acc[r * b.v_dim + c] * inv;
  }
}

// The oracle: scores, then the exact softmax of each row (max first), then the weighted sum. With
// bf16, q, k, the weights e^(s - max) and v are rounded to bf16 (products exact in fp32).
void BlockSerial(const Block& blk, float* scratch) {
  auto round = [&](float x) { return blk.bf16 ? Bf16ToFloat(FloatToBf16(x)) : x; };
  float* scores = scratch;
  for (int64_t i = 0; i < blk.rows; ++i) {
    float* s = scores + i * blk.kv_len;
    const float* q = blk.q + i * blk.head_dim;
    const float* mask = blk.mask ? blk.mask + i * blk.mask_stride_q : nullptr;
    float row_max = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < blk.kv_len; ++j) {
      float dot = 0.0f;
      for (int64_t k = 0; k < blk.head_dim; ++k) dot += round(q[k]) * round(blk.kt[k * blk.kv_len + j]);
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
      const float* v = blk.v + j * blk.v_dim;
      if (blk.bf16) {
        const float p = round(s[j]);  // the unnormalised weight, as the vector kernel rounds it
        for (int64_t c = 0; c < blk.v_dim; ++c) o[c] += p * round(v[c]);
      } else {
        const float p = s[j] / sum;
        for (int64_t c = 0; c < blk.v_dim; ++c) o[c] += p * v[c];
      }
    }
    if (blk.bf16)
      for (int64_t c = 0; c < blk.v_dim; ++c) o[c] /= sum;
  }
}

}  // namespace attention
}  // namespace m3
