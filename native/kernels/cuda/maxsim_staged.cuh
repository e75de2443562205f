// MaxSim staged kernels (see maxsim_cuda.h), the CUDA-core and first tensor-core design:
// fp32 documents always, and bf16 documents on request (Kernel::kStaged); maxsim_tiled.cuh holds
// the default bf16 kernel.
//
// Staged: one thread block per document (grid-stride over documents). The block stages up to
// `tile_rows` of the document's rows in shared memory, then every warp takes tiles of 16 query
// rows and computes their similarities to the staged rows:
//   bf16: WMMA 16x16x16 on tensor cores, fp32 accumulation, one A fragment (16 query rows x 16
//         dims) reused for up to four 16-row document tiles held as accumulators;
//   fp32: one warp per query row, the dot products split over the lanes and reduced by shuffles.
// The block keeps a running max per query row in shared memory; after the document's last
// slice, one score per query (the mean of its rows' maxima) goes to global memory.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

namespace m3 {
namespace cuda {
namespace staged {

constexpr int kThreads = 128;  // 4 warps per block
constexpr int kWarps = kThreads / 32;
constexpr int kMaxQueryRows = 4096;  // padded query rows per launch (batches split above it)

inline int64_t Pad16(int64_t n) { return (n + 15) / 16 * 16; }

/// Staged document rows are kStagePad elements longer than a row, so the 16 rows of a B fragment
/// fall in different shared-memory banks (a 2 KiB stride would put them all in one).
constexpr int kStagePad = 8;
/// Leading dimension of a warp's 16x16 fp32 scratch tile (not 16, for the same reason).
constexpr int kScratchLd = 20;

__global__ void MaxSimBf16Kernel(const __nv_bfloat16* __restrict__ docs, const uint32_t* __restrict__ doc_offsets, int64_t count,
                                 int dim_pad, int tile_rows, const __nv_bfloat16* __restrict__ queries, int query_rows_pad,
                                 const uint32_t* __restrict__ query_offsets, int num_queries, float* __restrict__ scores,
                                 int64_t score_stride) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  extern __shared__ __align__(128) unsigned char smem[];
  const int stride = dim_pad + kStagePad;
  __nv_bfloat16* staged = reinterpret_cast<__nv_bfloat16*>(smem);                       // tile_rows x stride
  float* run_max = reinterpret_cast<float*>(staged + static_cast<size_t>(tile_rows) * stride);  // query_rows_pad
  float* scratch = run_max + query_rows_pad;                                             // kWarps x 16 x kScratchLd
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* mine = scratch + warp * 16 * kScratchLd;
  const int vec_per_row = dim_pad / 8;  // 16-byte vectors of 8 bf16
  const int vec_stride = stride / 8;

  for (int64_t doc = blockIdx.x; doc < count; doc += gridDim.x) {
    const int64_t begin = doc_offsets[doc];
    const int nd = static_cast<int>(doc_offsets[doc + 1] - begin);
    for (int r = threadIdx.x; r < query_rows_pad; r += blockDim.x) run_max[r] = -INFINITY;
    __syncthreads();
    for (int c0 = 0; c0 < nd; c0 += tile_rows) {
      const int here = min(tile_rows, nd - c0);
      const int here_pad = (here + 15) / 16 * 16;
      const uint4* src = reinterpret_cast<const uint4*>(docs + (begin + c0) * static_cast<int64_t>(dim_pad));
      uint4* dst = reinterpret_cast<uint4*>(staged);
      for (int i = threadIdx.x; i < here_pad * vec_per_row; i += blockDim.x) {
        const int r = i / vec_per_row, v = i % vec_per_row;
        dst[r * vec_stride + v] = r < here ? src[i] : make_uint4(0, 0, 0, 0);
      }
      __syncthreads();
      const int doc_tiles = here_pad / 16;
      for (int qt = warp; qt < query_rows_pad / 16; qt += kWarps) {
        for (int t0 = 0; t0 < doc_tiles; t0 += 4) {
          const int nt = min(4, doc_tiles - t0);
          wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4];
#pragma unroll
          for (int t = 0; t < 4; ++t) wmma::fill_fragment(acc[t], 0.0f);
          for (int k = 0; k < dim_pad; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
            wmma::load_matrix_sync(a, queries + static_cast<int64_t>(qt) * 16 * dim_pad + k, dim_pad);
#pragma unroll
            for (int t = 0; t < 4; ++t) {
              if (t < nt) {
                // B = the staged rows transposed: column n of B is document row n.
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
                wmma::load_matrix_sync(b, staged + static_cast<int64_t>(t0 + t) * 16 * stride + k, stride);
                wmma::mma_sync(acc[t], a, b, acc[t]);
              }
            }
          }
#pragma unroll
          for (int t = 0; t < 4; ++t) {
            if (t < nt) {
              wmma::store_matrix_sync(mine, acc[t], kScratchLd, wmma::mem_row_major);
              __syncwarp();
              if (lane < 16) {
                const int valid = min(16, here - (t0 + t) * 16);
                float m = run_max[qt * 16 + lane];
                for (int j = 0; j < valid; ++j) m = fmaxf(m, mine[lane * kScratchLd + j]);
                run_max[qt * 16 + lane] = m;
              }
              __syncwarp();
            }
          }
        }
      }
      __syncthreads();
    }
    for (int q = threadIdx.x; q < num_queries; q += blockDim.x) {
      const int r0 = static_cast<int>(query_offsets[q]), r1 = static_cast<int>(query_offsets[q + 1]);
      float s = 0.0f;
      if (nd > 0 && r1 > r0) {
        for (int r = r0; r < r1; ++r) s += run_max[r];
        s /= static_cast<float>(r1 - r0);
      }
      scores[static_cast<int64_t>(q) * score_stride + doc] = s;
    }
    __syncthreads();
  }
#else
  // Code for devices below compute capability 8.0 (no bf16 tensor cores); Upload refuses bf16
  // there, so reaching this is a bug: fail loudly rather than return garbage.
  __trap();
#endif
}

__global__ void MaxSimF32Kernel(const float* __restrict__ docs, const uint32_t* __restrict__ doc_offsets, int64_t count,
                                int dim_pad, int tile_rows, const float* __restrict__ queries, int query_rows,
                                const uint32_t* __restrict__ query_offsets, int num_queries, float* __restrict__ scores,
                                int64_t score_stride) {
  extern __shared__ __align__(128) unsigned char smem[];
  float* staged = reinterpret_cast<float*>(smem);                                   // tile_rows x dim_pad
  float* run_max = staged + static_cast<size_t>(tile_rows) * dim_pad;               // query_rows
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int vec_per_row = dim_pad / 4;  // float4

  for (int64_t doc = blockIdx.x; doc < count; doc += gridDim.x) {
    const int64_t begin = doc_offsets[doc];
    const int nd = static_cast<int>(doc_offsets[doc + 1] - begin);
    for (int r = threadIdx.x; r < query_rows; r += blockDim.x) run_max[r] = -INFINITY;
    __syncthreads();
    for (int c0 = 0; c0 < nd; c0 += tile_rows) {
      const int here = min(tile_rows, nd - c0);
      const float4* src = reinterpret_cast<const float4*>(docs + (begin + c0) * static_cast<int64_t>(dim_pad));
      float4* dst = reinterpret_cast<float4*>(staged);
      for (int i = threadIdx.x; i < here * vec_per_row; i += blockDim.x) dst[i] = src[i];
      __syncthreads();
      for (int r = warp; r < query_rows; r += kWarps) {
        const float* q = queries + static_cast<int64_t>(r) * dim_pad;
        float m = lane == 0 ? run_max[r] : -INFINITY;  // lane 0 alone reads and writes it
        for (int j = 0; j < here; ++j) {
          const float* d = staged + static_cast<int64_t>(j) * dim_pad;
          float dot = 0.0f;
          for (int k = lane; k < dim_pad; k += 32) dot = fmaf(q[k], d[k], dot);
          for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
          m = fmaxf(m, dot);
        }
        if (lane == 0) run_max[r] = m;
      }
      __syncthreads();
    }
    for (int q = threadIdx.x; q < num_queries; q += blockDim.x) {
      const int r0 = static_cast<int>(query_offsets[q]), r1 = static_cast<int>(query_offsets[q + 1]);
      float s = 0.0f;
      if (nd > 0 && r1 > r0) {
        for (int r = r0; r < r1; ++r) s += run_max[r];
        s /= static_cast<float>(r1 - r0);
      }
      scores[static_cast<int64_t>(q) * score_stride + doc] = s;
    }
    __syncthreads();
  }
}

}  // namespace staged
}  // namespace cuda
}  // namespace m3
