// The Hopper (sm_90a) bf16 MaxSim kernel with warp specialisation: one producer warp issues the
// bulk tensor copies (TMA, `cp.async.bulk.tensor`) of each stage's query and document tiles into
// 128-byte-swizzled shared memory, completing on an mbarrier; two consumer warpgroups wait on it,
// run `wgmma` (64 query rows x BN document rows each) with one group in flight, and release a
// stage on a second mbarrier once the products reading it are done. No thread computes load
// addresses and no block-wide barrier runs in the main loop. The blocks are persistent: each
// walks a strided list of tiles, and the producer keeps loading the next tile's stages while the
// consumers run the epilogue (maxsim_wgmma.cuh's) of the last one, so with BGE-M3's 16 k-tiles
// per tile the pipeline does not drain and refill at every tile. A wait that never completes
// traps (after 20 s) instead of hanging the device.
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

constexpr int kBM = 128;        // two consumer warpgroups of 64 query rows
constexpr int kBK = 64;         // dimensions per stage: one 128-byte swizzled row
constexpr int kQueryBoxRows = 128;  // rows per box of the queries' tensor map: one query tile
constexpr int kDocBoxRows = 64;     // rows per box of the documents' tensor map: a share of a tile
constexpr int kThreads = 288;   // warps 0-7: consumers (two warpgroups); warp 8: the producer
constexpr int kConsumers = 256;

/// Shared memory of a <BN, STAGES> kernel: alignment slack, the stages, the full and empty
/// mbarriers, two tiles' column maps.
constexpr size_t SmemBytes(int bn, int stages) {
  return 1024 + static_cast<size_t>(stages) * (kBM + bn) * 128 + 2 * static_cast<size_t>(stages) * sizeof(uint64_t) +
         2 * static_cast<size_t>(bn) * sizeof(int);
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
/// wall time (the global timer): a pipeline bug must not hang the GPU. (A context kept off the
/// GPU for that long by other work would trap too; no wait here lasts more than microseconds.)
/// kCluster: acquire at cluster scope (a barrier other blocks of the cluster arrive on).
template <bool kCluster = false>
__device__ __forceinline__ void MbarWait(uint32_t bar, unsigned parity) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  const uint64_t start = GlobalTimerNs();
  for (;;) {
    uint32_t done = 0;
    if constexpr (kCluster) {
      asm volatile(
          "{\n"
          ".reg .pred p;\n"
          "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
          "selp.u32 %0, 1, 0, p;\n"
          "}\n"
          : "=r"(done)
          : "r"(bar), "r"(parity)
          : "memory");
    } else {
      asm volatile(
          "{\n"
          ".reg .pred p;\n"
          "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
          "selp.u32 %0, 1, 0, p;\n"
          "}\n"
          : "=r"(done)
          : "r"(bar), "r"(parity)
          : "memory");
    }
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

/// The same box into the shared memory of every block of the cluster in `mask`, at the same
/// offset, each completing on its own mbarrier at `bar`'s offset.
__device__ __forceinline__ void TmaLoad2dMulticast(uint32_t dst, const CUtensorMap* map, int inner, int outer, uint32_t bar, uint16_t mask) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, %3}], [%4], "
      "%5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(inner), "r"(outer), "r"(bar), "h"(mask)
      : "memory");
#endif
}

/// Arrives on the mbarrier at local offset `bar` in the shared memory of cluster block `rank`.
__device__ __forceinline__ void MbarArriveCluster(uint32_t bar, unsigned rank) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.release.cluster.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
#endif
}

/// Every thread of every block of the cluster (non-aligned: callers may have diverged).
__device__ __forceinline__ void ClusterSync() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("barrier.cluster.arrive.release;\nbarrier.cluster.wait.acquire;\n" ::: "memory");
#endif
}

__device__ __forceinline__ unsigned ClusterSpecial(int which) {
  unsigned v = 0;
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if (which == 0) asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(v));
  else if (which == 1) asm volatile("mov.u32 %0, %%clusterid.x;\n" : "=r"(v));
  else asm volatile("mov.u32 %0, %%nclusterid.x;\n" : "=r"(v));
#endif
  return v;
}

/// Consumer warps 0-7 only (the producer warp never joins): named barrier 1.
__device__ __forceinline__ void ConsumerSync() { asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumers) : "memory"); }

/// Persistent, in clusters of CS blocks (CS = 1: no cluster). Cluster c of C takes cluster tiles
/// c, c + C, ...; cluster tile t is document tile t / m_groups and query tiles
/// (t % m_groups) * CS + rank for its blocks (m_groups = query tiles / CS, rounded up; a query
/// tile past the queries loads zeros and writes nothing), so consecutive clusters share their
/// document tiles through L2 and the blocks of a cluster share one document tile through the
/// copy engine: each block loads BN / CS of its rows and multicasts them to every block of the
/// cluster, which cuts each block's L2 reads from (128 + BN) to (128 + BN / CS) rows per stage.
/// A stage is refilled only once the consumers of every block released it (the empty barrier
/// counts 8 warps x CS blocks; consumers arrive on all of the cluster's). The producer runs ahead
/// across tile boundaries: the next tile's stages load while the consumers fold the last one's
/// accumulators into the maxima. Outputs as the other tiled kernels'. `queries` is a tensor map
/// over [query_rows_pad x dim_pad] bf16 with 128-row x 64 boxes, `docs` over all document rows
/// [rows x dim_pad] with 64-row x 64 boxes, both into 128-byte-swizzled shared memory (boxes
/// stacked at 8 KiB steps form one swizzled block); rows past either tensor come in as zeros.
template <int BN, int STAGES, int MIN_BLOCKS, int CS>
__global__ void __launch_bounds__(kThreads, MIN_BLOCKS)
    MaxSimTmaKernel(const __grid_constant__ CUtensorMap queries, const __grid_constant__ CUtensorMap docs, int64_t row_begin,
                    int64_t row_end, const int* __restrict__ row_doc, int64_t doc_base, int64_t chunk_docs, int dim_pad, int query_rows,
                    int query_rows_pad, float* __restrict__ rowmax) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(BN == 128 || BN == 256, "wgmma N");
  static_assert(CS == 1 || CS == 2 || CS == 4, "cluster size");
  static_assert(BN / CS % kDocBoxRows == 0, "whole document boxes per block");
  constexpr int kABytes = kBM * 128, kStageBytes = (kBM + BN) * 128;
  constexpr int kPart = BN / CS;  // document rows this block loads per stage (for the whole cluster)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t base = (raw + 1023u) & ~1023u;  // the same in every block of the cluster (same kernel, same layout)
  const uint32_t bars = base + STAGES * kStageBytes;  // full[STAGES], then empty[STAGES]
  int* const col_doc = reinterpret_cast<int*>(smem_raw + (base - raw) + STAGES * kStageBytes + 2 * STAGES * sizeof(uint64_t));
  auto full = [bars](int s) { return bars + static_cast<uint32_t>(s * 8); };
  auto empty = [bars](int s) { return bars + static_cast<uint32_t>((STAGES + s) * 8); };

  const unsigned rank = CS > 1 ? ClusterSpecial(0) : 0;
  const int64_t cluster = CS > 1 ? ClusterSpecial(1) : blockIdx.x;
  const int64_t clusters = CS > 1 ? ClusterSpecial(2) : gridDim.x;
  const int m_tiles = (query_rows_pad + kBM - 1) / kBM;
  const int m_groups = (m_tiles + CS - 1) / CS;
  const int64_t tiles = m_groups * ((row_end - row_begin + BN - 1) / BN);
  const int k_tiles = (dim_pad + kBK - 1) / kBK;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      MbarInit(full(s), 1);        // the own producer's arrival (with the stage's byte count)
      MbarInit(empty(s), 8 * CS);  // one arrival per consumer warp of every block of the cluster
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if (CS > 1) ClusterSync();  // every block's barriers exist before any copy or arrival reaches them
  else __syncthreads();

  if (warp == 8) {  // the producer: one lane issues every copy
    if (lane == 0) {
      int64_t it = 0;  // stage uses so far: stage it % STAGES, its (it / STAGES)-th use
      for (int64_t tile = cluster; tile < tiles; tile += clusters) {
        const int m0 = static_cast<int>((tile % m_groups) * CS + rank) * kBM;
        const int n0 = static_cast<int>(row_begin + (tile / m_groups) * BN);
        for (int kt = 0; kt < k_tiles; ++kt, ++it) {
          const int s = static_cast<int>(it % STAGES);
          // Every consumer of the cluster released its last use (they all read what this block multicasts).
          if (it >= STAGES) MbarWait<(CS > 1)>(empty(s), static_cast<unsigned>((it / STAGES) & 1) ^ 1);
          MbarArriveExpectTx(full(s), kStageBytes);  // the own query box plus all BN document rows, from every block
          const uint32_t stage = base + static_cast<uint32_t>(s * kStageBytes);
          TmaLoad2d(stage, &queries, kt * kBK, m0, full(s));
#pragma unroll
          for (int b = 0; b < kPart / kDocBoxRows; ++b) {
            const int row = static_cast<int>(rank) * kPart + b * kDocBoxRows;  // within the tile
            if (CS > 1)
              TmaLoad2dMulticast(stage + kABytes + row * 128, &docs, kt * kBK, n0 + row, full(s), static_cast<uint16_t>((1u << CS) - 1));
            else
              TmaLoad2d(stage + kABytes + row * 128, &docs, kt * kBK, n0 + row, full(s));
          }
        }
      }
    }
  } else {
    // Consumers: warpgroup wgi computes query rows wgi * 64 .. + 63 of each tile.
    const int wgi = warp / 4;
    auto release = [&](int s) {
      if (lane != 0) return;
      if (CS == 1) {
        MbarArrive(empty(s));
      } else {
#pragma unroll
        for (int r = 0; r < CS; ++r) MbarArriveCluster(empty(s), static_cast<unsigned>(r));
      }
    };
    int64_t it = 0;
    int parity = 0;  // which column map this tile uses: tile i's epilogue reads it while tile i + 1 fills the other
    for (int64_t tile = cluster; tile < tiles; tile += clusters, parity ^= 1) {
      const int m0 = static_cast<int>((tile % m_groups) * CS + rank) * kBM;
      const int64_t n0 = row_begin + (tile / m_groups) * BN;
      int* const cols = col_doc + parity * BN;
      // Every consumer passed the last tile's ConsumerSync, so none still reads this map (from two tiles ago).
      for (int c = threadIdx.x; c < BN; c += kConsumers) {
        const int64_t g = n0 + c;
        cols[c] = g < row_end ? static_cast<int>(row_doc[g] - doc_base) : -1;
      }
      float acc[BN / 2];
#pragma unroll
      for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;
      int prev = -1;  // the stage whose products may still run
      for (int kt = 0; kt < k_tiles; ++kt, ++it) {
        const int s = static_cast<int>(it % STAGES);
        MbarWait(full(s), static_cast<unsigned>((it / STAGES) & 1));
        __syncwarp();  // the warp converged again for the .aligned instructions below
        const uint32_t stage = base + static_cast<uint32_t>(s * kStageBytes);
        const uint64_t desc_a = wg::Descriptor(stage + wgi * 64 * 128);
        const uint64_t desc_b = wg::Descriptor(stage + kABytes);
        wg::WgmmaFence();
#pragma unroll
        for (int kk = 0; kk < kBK / 16; ++kk) wg::Wgmma<BN>(acc, desc_a + 2 * kk, desc_b + 2 * kk);
        wg::WgmmaCommit();
        // One group in flight: the previous k-tile's products are done, so its stage goes back.
        wg::WgmmaWait1();
        if (prev >= 0) release(prev);
        prev = s;
      }
      wg::WgmmaWaitAll();
      if (prev >= 0) release(prev);
      ConsumerSync();  // the column map complete
      wg::WarpgroupEpilogue<BN>(acc, cols, m0 + wgi * 64, query_rows, rowmax, chunk_docs);
    }
  }
  // No block leaves while another may still arrive on its barriers or copy into its memory.
  if (CS > 1) ClusterSync();
#else
  __trap();
#endif
}

}  // namespace tma
}  // namespace cuda
}  // namespace m3

#endif  // CUDA_VERSION >= 12000
