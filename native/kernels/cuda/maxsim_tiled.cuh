// The tiled bf16 MaxSim kernel: the query rows x document rows similarity product computed as a
// GEMM (block tiles of BM query rows x BN document rows, a multi-stage cp.async pipeline over the
// dimension, ldmatrix + mma.sync m16n8k16 tensor-core instructions with fp32 accumulation), with
// the MaxSim reduction fused into its epilogue. Each thread folds its accumulators into the
// maximum of each of its query rows per document; a warp whose columns all belong to one document
// combines its lanes by shuffles first. The maxima go to a per (query row, document) array in
// global memory through an order-independent atomic max, so a document split over tiles, warps
// or blocks gets the same result in any order. A second kernel turns those maxima into one score
// per (query, document). The similarity matrix itself never leaves registers.
//
// Included by maxsim_cuda.cu only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

namespace m3 {
namespace cuda {
namespace tiled {

constexpr int kThreads = 256;  // 8 warps
constexpr int kSmemPad = 8;    // staged rows are BK + 8 elements apart: conflict-free ldmatrix

/// Shared memory one block of a <BM, BN, BK, STAGES> kernel needs.
constexpr size_t SmemBytes(int bm, int bn, int bk, int stages) {
  return static_cast<size_t>(stages) * (bm + bn) * (bk + kSmemPad) * 2 + static_cast<size_t>(bn) * 4;
}

__device__ __forceinline__ void CpAsync16(void* smem_dst, const void* gmem_src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  const int src_bytes = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled, nothing is read
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
#endif
}

__device__ __forceinline__ void CpAsyncCommit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
__device__ __forceinline__ void CpAsyncWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/// max into a float in global memory, for any mix of signs (inputs are finite or -inf). The
/// sign bit, not `v >= 0`, picks the integer order, so -0.0 is handled too.
__device__ __forceinline__ void AtomicMaxFloat(float* addr, float v) {
  if (!signbit(v))
    atomicMax(reinterpret_cast<int*>(addr), __float_as_int(v));
  else
    atomicMin(reinterpret_cast<unsigned*>(addr), __float_as_uint(v));
}

__global__ void FillKernel(float* p, int64_t n, float v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = v;
}

/// rowmax: [query_rows x chunk_docs] maxima of each query row over each document's rows.
/// scores[q * score_stride + doc] = the mean of query q's rows' maxima (0 for an empty query or
/// an empty document), as the CPU kernels define MaxSim.
__global__ void MeanOfMaximaKernel(const float* __restrict__ rowmax, int64_t chunk_docs, const uint32_t* __restrict__ doc_offsets,
                                   const uint32_t* __restrict__ query_offsets, int num_queries, float* __restrict__ scores,
                                   int64_t score_stride) {
  const int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (d >= chunk_docs) return;
  const bool empty_doc = doc_offsets[d + 1] == doc_offsets[d];
  for (int q = blockIdx.y; q < num_queries; q += gridDim.y) {
    const int r0 = static_cast<int>(query_offsets[q]), r1 = static_cast<int>(query_offsets[q + 1]);
    float s = 0.0f;
    if (!empty_doc && r1 > r0) {
      for (int r = r0; r < r1; ++r) s += rowmax[static_cast<int64_t>(r) * chunk_docs + d];
      s /= static_cast<float>(r1 - r0);
    }
    scores[static_cast<int64_t>(q) * score_stride + d] = s;
  }
}

__device__ __forceinline__ void LdMatrixX4(unsigned (&r)[4], const void* smem_row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
#endif
}

/// c += a (16x16, row-major) * b (16x8, column-major), bf16 in, fp32 accumulation.
__device__ __forceinline__ void MmaBf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/// One block: query rows [m0, m0 + BM) x document rows [n0, n0 + BN) of a chunk of documents
/// whose rows are [row_begin, row_end) of `docs`; row_doc[g] is the (absolute) document of row
/// g, and the chunk's first document is doc_base. Blocks are numbered query tile fastest, so the
/// blocks sharing a document tile run together and read it from HBM once.
template <int BM, int BN, int BK, int STAGES, int WARPS_M, int WARPS_N>
__global__ void __launch_bounds__(kThreads) MaxSimTiledKernel(const __nv_bfloat16* __restrict__ docs, int64_t row_begin, int64_t row_end,
                                                              const int* __restrict__ row_doc, int64_t doc_base, int64_t chunk_docs,
                                                              int dim_pad, const __nv_bfloat16* __restrict__ queries, int query_rows,
                                                              int query_rows_pad, float* __restrict__ rowmax) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  static_assert(WARPS_M * WARPS_N * 32 == kThreads, "8 warps");
  constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
  constexpr int FM = WM / 16, FN = WN / 8;  // m16 row blocks, n8 column blocks per warp
  static_assert(FM * 16 == WM && WN % 16 == 0 && BK % 16 == 0, "warp tiles are whole m16 x n16 blocks");
  constexpr int LD = BK + kSmemPad;
  extern __shared__ __align__(128) unsigned char smem[];
  __nv_bfloat16* const a_s = reinterpret_cast<__nv_bfloat16*>(smem);           // STAGES x BM x LD
  __nv_bfloat16* const b_s = a_s + static_cast<size_t>(STAGES) * BM * LD;       // STAGES x BN x LD
  int* const col_doc = reinterpret_cast<int*>(b_s + static_cast<size_t>(STAGES) * BN * LD);  // BN

  const int m_tiles = (query_rows_pad + BM - 1) / BM;
  const int64_t tile = blockIdx.x;
  const int m0 = static_cast<int>(tile % m_tiles) * BM;
  const int64_t n0 = row_begin + (tile / m_tiles) * BN;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const int k_tiles = (dim_pad + BK - 1) / BK;

  // Stage kt's BK dimensions of the block's query and document rows; past the end: zeros.
  auto load_stage = [a_s, b_s, m0, n0, row_end, dim_pad, query_rows_pad, queries, docs](int stage, int kt) {
    constexpr int kVecPerRow = BK / 8;  // 16-byte vectors
    const int k0 = kt * BK;
#pragma unroll 4
    for (int i = threadIdx.x; i < (BM + BN) * kVecPerRow; i += kThreads) {
      const int r = i / kVecPerRow, v = i % kVecPerRow;
      const int k = k0 + v * 8;
      if (r < BM) {
        const int qr = m0 + r;
        const bool ok = qr < query_rows_pad && k < dim_pad;
        CpAsync16(a_s + (static_cast<size_t>(stage) * BM + r) * LD + v * 8, ok ? queries + static_cast<int64_t>(qr) * dim_pad + k : queries,
                  ok);
      } else {
        const int64_t g = n0 + (r - BM);
        const bool ok = g < row_end && k < dim_pad;
        CpAsync16(b_s + (static_cast<size_t>(stage) * BN + (r - BM)) * LD + v * 8, ok ? docs + g * dim_pad + k : docs, ok);
      }
    }
  };

#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    CpAsyncCommit();
  }
  // Which document of the chunk each column belongs to (-1 past the end), while the first
  // stages load.
  for (int c = threadIdx.x; c < BN; c += kThreads) {
    const int64_t g = n0 + c;
    col_doc[c] = g < row_end ? static_cast<int>(row_doc[g] - doc_base) : -1;
  }

  float acc[FM][FN][4];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  // ldmatrix row addresses of this lane. A (16x16 at rows i*16): matrices (rows 0-7 | 8-15) x
  // (k 0-7 | 8-15); B (two n8 blocks at columns j*8): matrices (k 0-7 | 8-15) x (n 0-7 | 8-15).
  const int a_row = wm * WM + (lane % 16), a_col = (lane / 16) * 8;
  const int b_row = wn * WN + (lane % 8) + (lane / 16) * 8, b_col = ((lane / 8) % 2) * 8;

  for (int kt = 0; kt < k_tiles; ++kt) {
    CpAsyncWait<STAGES - 2>();
    __syncthreads();  // stage kt landed for every thread; stage kt - 1 is no longer read
    const int next = kt + STAGES - 1;
    if (next < k_tiles) load_stage(next % STAGES, next);
    CpAsyncCommit();
    const __nv_bfloat16* a_tile = a_s + static_cast<size_t>(kt % STAGES) * BM * LD;
    const __nv_bfloat16* b_tile = b_s + static_cast<size_t>(kt % STAGES) * BN * LD;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      unsigned a[FM][4];
#pragma unroll
      for (int i = 0; i < FM; ++i) LdMatrixX4(a[i], a_tile + (a_row + i * 16) * LD + kk + a_col);
#pragma unroll
      for (int j = 0; j < FN; j += 2) {
        unsigned b[4];  // b[0], b[1]: columns j*8..+7; b[2], b[3]: columns (j+1)*8..+7
        LdMatrixX4(b, b_tile + (b_row + j * 8) * LD + kk + b_col);
#pragma unroll
        for (int i = 0; i < FM; ++i) {
          MmaBf16(acc[i][j], a[i], b[0], b[1]);
          MmaBf16(acc[i][j + 1], a[i], b[2], b[3]);
        }
      }
    }
  }
  CpAsyncWait<0>();
  __syncthreads();  // col_doc visible

  // Epilogue. Accumulator element e of block (i, j) is query row i*16 + lane/4 + (e/2)*8, column
  // j*8 + (lane%4)*2 + e%2 of the warp tile.
  const int first = col_doc[wn * WN], last = col_doc[wn * WN + WN - 1];
  if (first >= 0 && first == last) {
    // Every column of the warp belongs to one document: a max per row, then across the 4 lanes
    // holding the same row, and one atomic per row.
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = -INFINITY;
#pragma unroll
        for (int j = 0; j < FN; ++j) m = fmaxf(m, fmaxf(acc[i][j][h * 2], acc[i][j][h * 2 + 1]));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        const int qr = m0 + wm * WM + i * 16 + lane / 4 + h * 8;
        if (lane % 4 == 0 && qr < query_rows) AtomicMaxFloat(rowmax + static_cast<int64_t>(qr) * chunk_docs + first, m);
      }
  } else {
    // Several documents (or the end of the rows): each lane folds runs of one document among its
    // own columns, left to right, into one atomic per run.
#pragma unroll
    for (int i = 0; i < FM; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int qr = m0 + wm * WM + i * 16 + lane / 4 + h * 8;
        int cur = -1;
        float best = -INFINITY;
#pragma unroll
        for (int j = 0; j < FN; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int d = col_doc[wn * WN + j * 8 + (lane % 4) * 2 + e];
            const float v = acc[i][j][h * 2 + e];
            if (d != cur) {
              if (cur >= 0 && qr < query_rows) AtomicMaxFloat(rowmax + static_cast<int64_t>(qr) * chunk_docs + cur, best);
              cur = d;
              best = v;
            } else {
              best = fmaxf(best, v);
            }
          }
        if (cur >= 0 && qr < query_rows) AtomicMaxFloat(rowmax + static_cast<int64_t>(qr) * chunk_docs + cur, best);
      }
  }
#else
  __trap();  // below sm_80: Upload refuses bf16 there, so reaching this is a bug
#endif
}

}  // namespace tiled
}  // namespace cuda
}  // namespace m3
