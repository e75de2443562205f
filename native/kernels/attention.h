// Fused scaled dot-product attention for the encoder's self-attention blocks:
//   out[b,h,i,:] = softmax_j(scale * q[b,h,i,:] · k[b,h,j,:] + mask[b,h,i,j]) · v[b,h,j,:]
// computed a block of query rows at a time, so the B x H x L x L score tensor that an unfused
// graph materialises (16 x 8192² floats = 4 GiB per layer for one 8192-token text of BGE-M3)
// never exists: a block's scores stay in cache. The layouts are the ones the exported graph
// already has at the attention's first MatMul: q [B,H,Sq,d], the key transposed kt [B,H,d,Skv]
// and v [B,H,Skv,dv], all contiguous.
#pragma once
#include <cstddef>
#include <cstdint>

#include "base/cpu_features.h"

namespace m3 {

struct AttentionArgs {
  int64_t batch = 0, heads = 0, q_len = 0, kv_len = 0, head_dim = 0, v_dim = 0;
  const float* q = nullptr;   // [batch][heads][q_len][head_dim]
  const float* kt = nullptr;  // [batch][heads][head_dim][kv_len]
  const float* v = nullptr;   // [batch][heads][kv_len][v_dim]
  /// Additive mask, may be null. Element (b, h, i, j) is mask[b*mask_stride_b + h*mask_stride_h +
  /// i*mask_stride_q + j]; a zero stride broadcasts that dimension (a padding mask [B,1,1,Skv]
  /// has mask_stride_h = mask_stride_q = 0).
  const float* mask = nullptr;
  int64_t mask_stride_b = 0, mask_stride_h = 0, mask_stride_q = 0;
  float scale = 1.0f;
  float* out = nullptr;  // [batch][heads][q_len][v_dim]
  /// precision 'bf16': q and the keys rounded to bf16 for the scores, the softmax weights
  /// e^(s - max) and v rounded to bf16 for the weighted sum; products summed in fp32, the softmax
  /// itself in fp32. The AVX-512 BF16 kernel where the CPU has it, else the serial kernel.
  bool bf16 = false;
};

/// Keys whose scores a block holds at once; longer rows run an online softmax over chunks.
constexpr int64_t kAttentionKeyChunk = 512;

/// Query rows per unit of work: as many as keep one key chunk's scores within about 128 KiB
/// (at least 6, at most 96: longer rows re-read k and v once per unit, so units stay large).
int64_t AttentionRowsPerUnit(int64_t kv_len);

/// Independent units of work (batch x heads x query-row blocks), in any order or concurrently.
int64_t AttentionUnitCount(const AttentionArgs& args);

/// Floats between rows of a block's scores: kv_len rounded up to 16, plus 16 when that is a
/// multiple of 256 (rows a power of two apart would share cache sets).
int64_t AttentionScoreStride(int64_t kv_len);

/// Floats of scratch one unit needs (one buffer per concurrent caller).
size_t AttentionScratchFloats(const AttentionArgs& args);

/// Computes unit `unit` of the output on `tier` (clamped to what the CPU supports).
void AttentionRunUnit(IsaTier tier, const AttentionArgs& args, int64_t unit, float* scratch);

/// The whole attention on `tier`, on the calling thread (tests and benchmarks).
void AttentionForwardOn(IsaTier tier, const AttentionArgs& args);

namespace attention {
/// One unit's query rows [row_begin, row_begin + rows) of head (b, h); scratch holds
/// AttentionScratchFloats floats. Per-tier kernels (attention_<isa>.cc).
struct Block {
  const float* q;     // first query row of the block, head_dim floats per row
  const float* kt;    // [head_dim][kv_len] of this head
  const float* v;     // [kv_len][v_dim] of this head
  const float* mask;  // row 0's mask (null: none)
  int64_t mask_stride_q;
  float* out;  // first output row, v_dim floats per row
  int64_t rows, kv_len, head_dim, v_dim;
  float scale;
  bool bf16;
};
void BlockSerial(const Block& block, float* scratch);

/// Most keys a vector kernel packs from kt at a time (head_dim x this floats of scratch).
constexpr int64_t kAttentionPackedKeys = 48;

/// The vector kernels' steps, which RunBlock strings together (attention_<isa>.cc).
struct BlockOps {
  /// scores[r][0..n) (ld apart) for keys [j_begin, j_begin + n): scaled, masked; kpack is scratch.
  void (*scores)(const Block& b, int64_t j_begin, int64_t n, float* scores, int64_t ld, float* kpack);
  /// out[r] (out_ld apart) = acc[r] * factor[r], or with `accumulate` out[r] * factor[r] + acc[r],
  /// where acc[r] = sum_{j < n} p[r][j] * v[j_begin + j].
  void (*weighted)(const Block& b, const float* p, int64_t ld, int64_t j_begin, int64_t n, const float* factor,
                   float* out, int64_t out_ld, bool accumulate);
  float (*row_max)(const float* s, int64_t n);
  /// s[j] = e^(s[j] - max) in place; returns their sum.
  float (*exp_sum)(float* s, int64_t n, float max);
  float (*exp)(float x);
};
const BlockOps& OpsAvx2();
const BlockOps& OpsAvx512();
/// OpsAvx512 with both products in bf16 (attention_bf16.cc; AVX-512 BF16 CPUs only).
const BlockOps& OpsAvx512Bf16();

/// One block on a vector tier: the exact softmax when kv_len fits one key chunk, else the online
/// softmax over chunks.
void RunBlock(const Block& block, const BlockOps& ops, float* scratch);
}  // namespace attention

}  // namespace m3
