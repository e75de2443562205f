// The Hopper (sm_90a) bf16 MaxSim kernel: the tiled kernel's design (maxsim_tiled.cuh) with the
// products on warpgroup MMA (`wgmma.mma_async`), which reads both operands from shared memory
// through matrix descriptors and runs asynchronously of the issuing warps. Each block holds two
// warpgroups, each one 64 query rows x BN document rows; the operands are staged by a cp.async
// pipeline into the 128-byte-swizzled K-major layout the descriptors describe (BK = 64: one
// 128-byte row per query or document row and stage). Each k-tile's wgmma group runs while the
// warps wait for the next stage and issue the loads after it; a stage is refilled only once the
// group that read it has completed. The epilogue folds each thread's
// accumulators into per (query row, document) maxima like the tiled kernel's, by 8-column
// blocks: a block inside one document joins the running maximum of the row, whose 4 owning lanes
// combine it by shuffles when the document changes; a block holding a document boundary goes to
// the atomics element by element.
//
// Built for sm_90a only (the `wgmma` instructions); elsewhere the kernel traps, and the host
// picks it only where ProbeWgmmaKernel reports the sm_90a code.
//
// Included by maxsim_cuda.cu only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/maxsim_tiled.cuh"

namespace m3 {
namespace cuda {
namespace wg {

constexpr int kBM = 128;     // two warpgroups of 64 query rows
constexpr int kBK = 64;      // dimensions per stage: one 128-byte swizzled row
constexpr int kRowBytes = kBK * 2;
constexpr int kThreads = 256;

/// Shared memory of a <BN, STAGES> kernel: 1 KiB of alignment slack, the stages, the column map.
constexpr size_t SmemBytes(int bn, int stages) {
  return 1024 + static_cast<size_t>(stages) * (kBM + bn) * kRowBytes + static_cast<size_t>(bn) * 4;
}

/// 1 where this code was built for sm_90a (the wgmma kernel runs), else 0.
__global__ void ProbeWgmmaKernel(int* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *out = 1;
#else
  *out = 0;
#endif
}

/// Shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle layout: rows of
/// 128 bytes, 8-row groups 1024 bytes apart, the swizzle atom 1024-byte aligned.
__device__ __forceinline__ uint64_t Descriptor(uint32_t smem_addr) {
  uint64_t d = (smem_addr & 0x3FFFFu) >> 4;  // start address
  d |= static_cast<uint64_t>(16 >> 4) << 16;  // leading byte offset (unused by swizzled K-major)
  d |= static_cast<uint64_t>(1024 >> 4) << 32;  // stride byte offset: one 8-row group
  d |= static_cast<uint64_t>(1) << 62;          // 128-byte swizzle
  return d;
}

__device__ __forceinline__ void WgmmaFence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void WgmmaCommit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void WgmmaWaitAll() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void WgmmaWait1() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
#endif
}
/// Orders this thread's generic-proxy shared-memory writes (cp.async) before async-proxy reads (wgmma).
__device__ __forceinline__ void FenceProxyAsync() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// acc (64 x 256 per warpgroup, fp32) += A (64 x 16, K-major, shared memory) * B (16 x 256, K-major, shared memory).
__device__ __forceinline__ void WgmmaM64N256K16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
            "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, 1, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b));
#endif
}

/// acc (64 x 128 per warpgroup, fp32) += A (64 x 16, K-major, shared memory) * B (16 x 128, K-major, shared memory).
__device__ __forceinline__ void WgmmaM64N128K16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, 1, 1, 1, 0, 0;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b));
#endif
}

template <int BN>
__device__ __forceinline__ void Wgmma(float (&d)[BN / 2], uint64_t desc_a, uint64_t desc_b) {
  if constexpr (BN == 256)
    WgmmaM64N256K16(d, desc_a, desc_b);
  else
    WgmmaM64N128K16(d, desc_a, desc_b);
}

/// The epilogue of a warpgroup's 64 x BN accumulator tile (query rows row0.., the tile's columns
/// mapped to documents by col_doc): acc[j * 4 + h * 2 + e] is query row (warp % 4) * 16 +
/// lane / 4 + h * 8, column j * 8 + (lane % 4) * 2 + e. An 8-column block inside one document
/// joins the running maximum of the row, whose 4 owning lanes combine it by shuffles when the
/// document changes; a block holding a document boundary goes to the atomics element by element.
template <int BN>
__device__ __forceinline__ void WarpgroupEpilogue(const float (&acc)[BN / 2], const int* col_doc, int row0, int query_rows, float* rowmax,
                                                  int64_t chunk_docs) {
  const int lane = threadIdx.x % 32, wq = (threadIdx.x / 32) % 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int qr = row0 + wq * 16 + lane / 4 + h * 8;
    const bool valid = qr < query_rows;
    float* const out_row = rowmax + static_cast<int64_t>(qr) * chunk_docs;
    int cur = -1;
    float best = -INFINITY;
    auto flush = [&]() {  // warp-uniform: cur is the same in every lane
      if (cur < 0) return;
      float m = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      if (lane % 4 == 0 && valid) tiled::AtomicMaxFloat(out_row + cur, m);
    };
#pragma unroll
    for (int j = 0; j < BN / 8; ++j) {
      const int d0 = col_doc[j * 8], d7 = col_doc[j * 8 + 7];  // column docs never decrease, -1 only at the end
      const float v0 = acc[j * 4 + h * 2], v1 = acc[j * 4 + h * 2 + 1];
      if (d0 == d7) {
        if (d0 != cur) {
          flush();
          cur = d0;
          best = -INFINITY;
        }
        best = fmaxf(best, fmaxf(v0, v1));
      } else {
        flush();
        cur = -1;
        const int c = j * 8 + (lane % 4) * 2;
        const int da = col_doc[c], db = col_doc[c + 1];
        if (valid && da >= 0) tiled::AtomicMaxFloat(out_row + da, v0);
        if (valid && db >= 0) tiled::AtomicMaxFloat(out_row + db, v1);
      }
    }
    flush();
  }
}

/// Same parameters and block numbering as tiled::MaxSimTiledKernel, with BM = 128. (BN = 128
/// fits two blocks per SM with the registers ptxas gives it, 117; the measured configuration.)
template <int BN, int STAGES>
__global__ void __launch_bounds__(kThreads, 1) MaxSimWgmmaKernel(const __nv_bfloat16* __restrict__ docs, int64_t row_begin, int64_t row_end,
                                                                 const int* __restrict__ row_doc, int64_t doc_base, int64_t chunk_docs,
                                                                 int dim_pad, const __nv_bfloat16* __restrict__ queries, int query_rows,
                                                                 int query_rows_pad, float* __restrict__ rowmax) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(BN == 128 || BN == 256, "wgmma N");
  constexpr int kStageBytes = (kBM + BN) * kRowBytes;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  const uint32_t base = (raw + 1023u) & ~1023u;  // the swizzle atoms must be 1024-byte aligned
  unsigned char* const smem = smem_raw + (base - raw);
  int* const col_doc = reinterpret_cast<int*>(smem + static_cast<size_t>(STAGES) * kStageBytes);

  const int m_tiles = (query_rows_pad + kBM - 1) / kBM;
  const int64_t tile = blockIdx.x;
  const int m0 = static_cast<int>(tile % m_tiles) * kBM;
  const int64_t n0 = row_begin + (tile / m_tiles) * BN;
  const int k_tiles = (dim_pad + kBK - 1) / kBK;

  // Stage kt: row r of the stage (query rows, then document rows) is 128 bytes at r * 128, its
  // 16-byte chunk c at chunk c ^ (r % 8) (the 128-byte swizzle); zeros past the data.
  auto load_stage = [smem, m0, n0, row_end, dim_pad, query_rows_pad, queries, docs](int stage, int kt) {
    unsigned char* const st = smem + static_cast<size_t>(stage) * kStageBytes;
    const int k0 = kt * kBK;
#pragma unroll 4
    for (int i = threadIdx.x; i < (kBM + BN) * 8; i += kThreads) {
      const int r = i / 8, c = i % 8;
      const int k = k0 + c * 8;
      unsigned char* dst = st + r * kRowBytes + ((c ^ (r & 7)) << 4);
      if (r < kBM) {
        const int qr = m0 + r;
        const bool ok = qr < query_rows_pad && k < dim_pad;
        tiled::CpAsync16(dst, ok ? queries + static_cast<int64_t>(qr) * dim_pad + k : queries, ok);
      } else {
        const int64_t g = n0 + (r - kBM);
        const bool ok = g < row_end && k < dim_pad;
        tiled::CpAsync16(dst, ok ? docs + g * dim_pad + k : docs, ok);
      }
    }
  };

  // Loads run STAGES - 2 k-tiles ahead, so that one group of wgmma can still be reading the
  // stage before the one being computed while the next loads are issued.
  static_assert(STAGES >= 3, "a stage being loaded, one being read by the tensor cores, one in flight");
#pragma unroll
  for (int s = 0; s < STAGES - 2; ++s) {
    if (s < k_tiles) load_stage(s, s);
    tiled::CpAsyncCommit();
  }
  for (int c = threadIdx.x; c < BN; c += kThreads) {
    const int64_t g = n0 + c;
    col_doc[c] = g < row_end ? static_cast<int>(row_doc[g] - doc_base) : -1;
  }

  const int wgi = threadIdx.x / 128;  // warpgroup: query rows wgi * 64 .. + 63 of the tile
  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) acc[i] = 0.0f;

  for (int kt = 0; kt < k_tiles; ++kt) {
    tiled::CpAsyncWait<STAGES - 3>();
    FenceProxyAsync();  // this thread's cp.async data, visible to the tensor cores' reads
    // Every thread's part of stage kt landed, and every warpgroup waited for its wgmma of k-tile
    // kt - 2, so stage (kt - 2) % STAGES can be refilled.
    __syncthreads();
    const int next = kt + STAGES - 2;
    if (next < k_tiles) load_stage(next % STAGES, next);
    tiled::CpAsyncCommit();
    const uint32_t st = base + static_cast<uint32_t>((kt % STAGES) * kStageBytes);
    const uint64_t desc_a = Descriptor(st + wgi * 64 * kRowBytes);
    const uint64_t desc_b = Descriptor(st + kBM * kRowBytes);
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) Wgmma<BN>(acc, desc_a + 2 * kk, desc_b + 2 * kk);  // +32 bytes per k16
    WgmmaCommit();
    WgmmaWait1();  // k-tile kt - 1 done; kt may still run
  }
  WgmmaWaitAll();
  tiled::CpAsyncWait<0>();
  __syncthreads();  // col_doc visible

  WarpgroupEpilogue<BN>(acc, col_doc, m0 + wgi * 64, query_rows, rowmax, chunk_docs);
#else
  __trap();  // not sm_90a code: the host never launches it there
#endif
}

}  // namespace wg
}  // namespace cuda
}  // namespace m3
