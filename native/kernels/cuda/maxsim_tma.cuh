// The Hopper (sm_90a) bf16 MaxSim kernel with warp specialisation: one producer warp issues the
// bulk tensor copies (TMA, `cp.async.bulk.tensor`) of each stage's query and document tiles into
// 128-byte-swizzled shared memory, completing on an mbarrier; two consumer warpgroups wait on it,
// run `wgmma` (64 query rows x 256 document rows each) with one group in flight, and release a
// stage on a second mbarrier once the products reading it are done. No thread computes load addresses and no block-wide barrier runs in the main loop.
// The epilogue is maxsim_wgmma.cuh's. A wait that never completes traps (after about a second)
// instead of hanging the device.
//
// Included by maxsim_cuda.cu only.
#pragma once
#include <cuda.h>  // CUtensorMap (the type only; the encoder is fetched from the driver at run time)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/maxsim_tiled.cuh"
#include "kernels/cuda/maxsim_wgmma.cuh"

// Tensor maps came with CUDA 12.
#if defined(CUDA_VERSION) && CUDA_VERSION >= 12000
#define M3_HAVE_TMA 1

namespace m3 {
namespace cuda {
namespace tma {

constexpr int kBM = 128;  // two consumer warpgroups of 64 query rows
constexpr int kBN = 256;  // document rows per tile
constexpr int kBK = 64;   // dimensions per stage: one 128-byte swizzled row
constexpr int kStages = 4;
constexpr int kThreads = 288;  // warps 0-7: consumers (two warpgroups); warp 8: the producer
constexpr int kABytes = kBM * 128, kBBytes = kBN * 128, kStageBytes = kABytes + kBBytes;

constexpr size_t SmemBytes() {
  return 1024 + static_cast<size_t>(kStages) * kStageBytes + 2 * kStages * sizeof(uint64_t) + kBN * sizeof(int);
}

__device__ __forceinline__ void MbarInit(uint32_t bar, unsigned count) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
#endif
}

__device__ __forceinline__ void MbarArriveExpectTx(uint32_t bar, unsigned bytes) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void MbarArrive(uint32_t bar) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}

__device__ __forceinline__ uint64_t GlobalTimerNs() {
  uint64_t t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t));
  return t;
}

/// Waits until the phase of parity `parity` of the mbarrier has completed; traps after 20 s of
/// wall time (the global timer, which preemption and migration do not distort): a pipeline bug
/// must not hang the GPU.
__device__ __forceinline__ void MbarWait(uint32_t bar, unsigned parity) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  const uint64_t start = GlobalTimerNs();
  for (;;) {
    uint32_t done = 0;
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done) return;
    if (GlobalTimerNs() - start > 20000000000ull) __trap();
  }
#endif
}

/// One box of a 2-D tensor map (inner coordinate first) into shared memory, completing on `bar`.
__device__ __forceinline__ void TmaLoad2d(uint32_t dst, const CUtensorMap* map, int inner, int outer, uint32_t bar) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(bar)
      : "memory");
#endif
}

/// Same block numbering and outputs as the other tiled kernels. `queries` is a tensor map over
/// [query_rows_pad x dim_pad] bf16 with 128 x 64 boxes, `docs` over all document rows
/// [rows x dim_pad] with 256 x 64 boxes, both 128-byte swizzled; rows past either tensor come
/// in as zeros.
__global__ void __launch_bounds__(kThreads, 1)
    MaxSimTmaKernel(const __grid_constant__ CUtensorMap queries, const __grid_constant__ CUtensorMap docs, int64_t row_begin,
                    int64_t row_end, const int* __restrict__ row_doc, int64_t doc_base, int64_t chunk_docs, int dim_pad, int query_rows,
                    int query_rows_pad, float* __restrict__ rowmax) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t base = (raw + 1023u) & ~1023u;
  const uint32_t bars = base + kStages * kStageBytes;  // full[kStages], then empty[kStages]
  int* const col_doc = reinterpret_cast<int*>(smem_raw + (base - raw) + kStages * kStageBytes + 2 * kStages * sizeof(uint64_t));
  auto full = [bars](int s) { return bars + static_cast<uint32_t>(s * 8); };
  auto empty = [bars](int s) { return bars + static_cast<uint32_t>((kStages + s) * 8); };

  const int m_tiles = (query_rows_pad + kBM - 1) / kBM;
  const int64_t tile = blockIdx.x;
  const int m0 = static_cast<int>(tile % m_tiles) * kBM;
  const int64_t n0 = row_begin + (tile / m_tiles) * kBN;
  const int k_tiles = (dim_pad + kBK - 1) / kBK;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      MbarInit(full(s), 1);   // the producer's arrival (with the stage's byte count)
      MbarInit(empty(s), 8);  // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  for (int c = threadIdx.x; c < kBN; c += kThreads) {
    const int64_t g = n0 + c;
    col_doc[c] = g < row_end ? static_cast<int>(row_doc[g] - doc_base) : -1;
  }
  __syncthreads();

  if (warp == 8) {  // the producer
    if (lane == 0) {
      for (int kt = 0; kt < k_tiles; ++kt) {
        const int s = kt % kStages;
        if (kt >= kStages) MbarWait(empty(s), ((kt / kStages) & 1) ^ 1);  // the consumers released its last use
        MbarArriveExpectTx(full(s), kStageBytes);
        const uint32_t stage = base + static_cast<uint32_t>(s * kStageBytes);
        TmaLoad2d(stage, &queries, kt * kBK, m0, full(s));
        TmaLoad2d(stage + kABytes, &docs, kt * kBK, static_cast<int>(n0), full(s));
      }
    }
    return;
  }

  // Consumers.
  const int wgi = warp / 4;
  float acc[kBN / 2];
#pragma unroll
  for (int i = 0; i < kBN / 2; ++i) acc[i] = 0.0f;
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int s = kt % kStages;
    MbarWait(full(s), (kt / kStages) & 1);
    __syncwarp();  // the warp converged again for the .aligned instructions below
    const uint32_t stage = base + static_cast<uint32_t>(s * kStageBytes);
    const uint64_t desc_a = wg::Descriptor(stage + wgi * 64 * 128);
    const uint64_t desc_b = wg::Descriptor(stage + kABytes);
    wg::WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) wg::Wgmma<kBN>(acc, desc_a + 2 * kk, desc_b + 2 * kk);
    wg::WgmmaCommit();
    // One group in flight: k-tile kt - 1's products are done, so its stage goes back to the producer.
    wg::WgmmaWait1();
    if (kt > 0 && lane == 0) MbarArrive(empty((kt - 1) % kStages));
  }
  wg::WgmmaWaitAll();

  wg::WarpgroupEpilogue<kBN>(acc, col_doc, m0 + wgi * 64, query_rows, rowmax, chunk_docs);
#else
  __trap();
#endif
}

}  // namespace tma
}  // namespace cuda
}  // namespace m3

#endif  // CUDA_VERSION >= 12000
