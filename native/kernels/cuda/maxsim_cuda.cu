// CUDA MaxSim (see maxsim_cuda.h): documents uploaded once, batches of queries launched on the
// tiled GEMM kernels of maxsim_tiled.cuh / maxsim_wgmma.cuh / maxsim_tma.cuh (bf16 documents) or
// the staged kernels of maxsim_staged.cuh (fp32 documents, and bf16 on request).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/maxsim_cuda.h"
#include "kernels/cuda/maxsim_staged.cuh"
#include "kernels/cuda/maxsim_tiled.cuh"
#include "kernels/cuda/maxsim_wgmma.cuh"
#include "kernels/cuda/maxsim_tma.cuh"
#include "kernels/quantize.h"

namespace m3 {
namespace cuda {

namespace {

using util::Check;
using util::DeviceBuffer;
using util::OnDevice;

using staged::kMaxQueryRows;
using staged::kScratchLd;
using staged::kStagePad;
using staged::kThreads;
using staged::kWarps;
using staged::MaxSimBf16Kernel;
using staged::MaxSimF32Kernel;
using staged::Pad16;

// The tiled kernels' configurations. By default the first whose query tile covers a batch's
// padded rows runs it (the last one above 128 rows), or where the device runs wgmma the
// persistent tensor-map kernel above 32 rows (the wgmma kernel above 64 rows when the documents
// have no tensor map); tests and benchmarks name one (MaxSimBatch's tile_config).
using TiledFn = void (*)(const __nv_bfloat16*, int64_t, int64_t, const int*, int64_t, int64_t, int, const __nv_bfloat16*, int, int,
                         float*);
#ifdef M3_HAVE_TMA
using TmaFn = void (*)(CUtensorMap, CUtensorMap, int64_t, int64_t, const int*, int64_t, int64_t, int, int, int, float*);
#else
using TmaFn = void (*)();
#endif
struct TiledConfig {
  int bm, bn, bk, stages;
  int cluster;  // blocks per cluster (tensor-map kernels: sharing each document tile by multicast)
  bool wgmma;  // needs sm_90a code and a compute capability 9.0 device
  TiledFn fn;  // null for the tensor-map kernels
  TmaFn tma;   // the persistent warp-specialised kernel fed by tensor maps (tma::MaxSimTmaKernel)
  size_t smem;
  const char* name;
};
#define M3_TILED(BM, BN, BK, ST, WMS, WNS)                                                                                       \
  {BM, BN, BK, ST, 1, false, tiled::MaxSimTiledKernel<BM, BN, BK, ST, WMS, WNS>, nullptr, tiled::SmemBytes(BM, BN, BK, ST), \
   "mma " #BM "x" #BN "x" #BK " " #ST " stages"}
#define M3_WGMMA(BN, ST) \
  {wg::kBM, BN, wg::kBK, ST, 1, true, wg::MaxSimWgmmaKernel<BN, ST>, nullptr, wg::SmemBytes(BN, ST), "wgmma 128x" #BN "x64 " #ST " stages"}
#define M3_TMA(BN, ST, PER_SM, CS, NAME)                                                                               \
  {tma::kBM, BN, tma::kBK, ST, CS, true, nullptr, tma::MaxSimTmaKernel<BN, ST, PER_SM, CS>, tma::SmemBytes(BN, ST), \
   "wgmma+tma 128x" #BN "x64 " #ST " stages, " NAME}
const TiledConfig kTiledConfigs[] = {
    // Measured on an H100 (README): the three defaults of the mma kernel by batch size, and the
    // wgmma kernel that takes batches above 64 rows on Hopper.
    M3_TILED(32, 128, 64, 4, 1, 8),   // one query of up to 32 rows: memory-bound, deep pipeline
    M3_TILED(64, 128, 64, 4, 2, 4),   // two queries
    M3_TILED(128, 128, 64, 3, 2, 4),  // batches: two blocks per SM
    M3_WGMMA(128, 3),                 // batches on Hopper: two blocks per SM, one wgmma group in flight
    M3_WGMMA(256, 4),                 // one block per SM, for comparison
#ifdef M3_HAVE_TMA
    M3_TMA(256, 4, 1, 1, "persistent 1/SM"),  // warp-specialised, persistent: one block per SM
    M3_TMA(128, 3, 2, 1, "persistent 2/SM"),  // two blocks per SM, whose epilogues overlap each other's products
    // Clusters sharing each document tile by multicast: a third (2) or half (4) less L2 traffic
    // per product, which bounds the one-block kernel near half the tensor-core peak.
    M3_TMA(256, 4, 1, 2, "persistent 1/SM, clusters of 2"),
    M3_TMA(256, 4, 1, 4, "persistent 1/SM, clusters of 4"),
#endif
};
#undef M3_TILED
#undef M3_WGMMA
#undef M3_TMA
constexpr int kConfigCount = static_cast<int>(sizeof(kTiledConfigs) / sizeof(kTiledConfigs[0]));
constexpr int kTiledDefault[] = {0, 1, 2};  // by query tile size: 32, 64, 128 rows
constexpr int kWgmmaDefault = 3;            // above 64 rows where the device runs wgmma
#ifdef M3_HAVE_TMA
// Above 32 rows where the documents have a tensor map: measured on an H100 (README), the
// persistent two-blocks-per-SM kernel took 16 queries of 32 rows against 1M rows in 2.09 ms
// (526 TFLOP/s) against the wgmma kernel's 3.53 ms, and 2 queries in 0.77 ms against 0.82 ms.
// One query stays on the mma.sync tile (0.79 ms against 0.84).
constexpr int kTmaDefault = 6;
static_assert(kTmaDefault < kConfigCount, "the tensor-map default is a configuration");
#endif

template <typename F>
void ForEachTiled(F&& f) {
  for (const auto& config : kTiledConfigs) {
    if (config.fn) f(config.fn, config.smem);
#ifdef M3_HAVE_TMA
    if (config.tma) f(config.tma, config.smem);
#endif
  }
}

/// The configuration for `rows_pad` query rows: the one named (where it can run), else the
/// default for that many rows, else the largest mma.sync tile that fits the device's shared
/// memory (GPUs with less of it than the data-center ones); null where none fits (the staged
/// kernel runs then).
const TiledConfig* PickTiled(int64_t rows_pad, size_t smem_limit, bool wgmma, bool tma, int config) {
  auto fits = [&](const TiledConfig* c) { return c->smem <= smem_limit; };
  if (config >= 0 && config < kConfigCount && (wgmma || !kTiledConfigs[config].wgmma) && (tma || !kTiledConfigs[config].tma) &&
      fits(&kTiledConfigs[config]))
    return &kTiledConfigs[config];
#ifdef M3_HAVE_TMA
  if (wgmma && tma && rows_pad > 32 && fits(&kTiledConfigs[kTmaDefault])) return &kTiledConfigs[kTmaDefault];
#endif
  if (wgmma && rows_pad > 64 && fits(&kTiledConfigs[kWgmmaDefault])) return &kTiledConfigs[kWgmmaDefault];
  const TiledConfig* pick = nullptr;
  for (const int i : kTiledDefault) {  // ascending tile sizes: the smallest covering the rows
    if (!fits(&kTiledConfigs[i])) break;
    pick = &kTiledConfigs[i];
    if (rows_pad <= pick->bm) break;
  }
  return pick;
}

#ifdef M3_HAVE_TMA
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                                   const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/// The driver's tensor-map encoder (no link against libcuda: fetched through the runtime), or
/// null where the driver has none.
EncodeTiledFn TensorMapEncoder() {
  static const EncodeTiledFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found{};
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &found);
#endif
    if (err != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<EncodeTiledFn>(p);
  }();
  return fn;
}

/// A tensor map over `rows` rows of `dim_pad` bf16 (row-major), read in boxes of `box_rows` rows
/// x 64 dimensions into 128-byte-swizzled shared memory; false where it cannot be made.
bool MakeTensorMap(CUtensorMap* map, const void* data, int64_t dim_pad, int64_t rows, uint32_t box_rows) {
  const EncodeTiledFn encode = TensorMapEncoder();
  // Box coordinates are int32, and a tile's last box starts up to 192 rows past its first.
  if (!encode || rows < 1 || rows >= (int64_t{1} << 31) - 256) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(dim_pad), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(dim_pad) * 2};
  const cuuint32_t box[2] = {64, box_rows};
  const cuuint32_t element_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(data), dims, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
#endif

/// Per (query row, document) maxima are kept for this many bytes at most; longer document sets
/// are scored in chunks of documents.
constexpr int64_t kRowMaxBudget = 256 << 20;

}  // namespace

struct DeviceMultiVectors::Impl {
  int device = 0;
  VectorFormat format = VectorFormat::kBF16;
  int64_t dim = 0, dim_pad = 0, count = 0, rows = 0;
  int sms = 1;
  size_t smem_limit = 48 << 10;
  int compute_major = 0;
  bool wgmma = false;  // this build has the sm_90a kernels and the device runs them
  bool tma = false;    // and a tensor map over the documents was made (docs_map)
#ifdef M3_HAVE_TMA
  CUtensorMap docs_map{};
#endif
  DeviceBuffer data, offsets, row_doc;  // row_doc: each row's document (bf16: the tiled kernel)
  std::vector<uint32_t> host_offsets;  // chunking documents for the tiled kernel
  mutable std::mutex mu;  // one batch at a time per document set (its scratch and timing fields)
  mutable double last_seconds = 0;
  // Scratch reused by every batch (grow-only, freed with the set): allocating and freeing device
  // memory per call would synchronise the device and cost more than a small batch's kernels.
  mutable DeviceBuffer queries_buf, query_offsets_buf, scores_buf, rowmax_buf;
  cudaEvent_t start = nullptr, stop = nullptr;
  ~Impl() {
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
  }
};

std::vector<std::string> TiledConfigNames() {
  std::vector<std::string> names;
  for (const auto& config : kTiledConfigs) names.emplace_back(config.name);
  return names;
}

DeviceMultiVectors::DeviceMultiVectors(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceMultiVectors::~DeviceMultiVectors() {
  if (!impl_) return;
  int previous = 0;
  const bool restore = cudaGetDevice(&previous) == cudaSuccess;
  cudaSetDevice(impl_->device);  // the buffers are freed on the device that holds them
  impl_.reset();
  if (restore) cudaSetDevice(previous);
}

int64_t DeviceMultiVectors::count() const { return impl_->count; }
int64_t DeviceMultiVectors::dim() const { return impl_->dim; }
int64_t DeviceMultiVectors::rows() const { return impl_->rows; }
VectorFormat DeviceMultiVectors::format() const { return impl_->format; }
int DeviceMultiVectors::device() const { return impl_->device; }
bool DeviceMultiVectors::uses_wgmma() const { return impl_->wgmma; }
bool DeviceMultiVectors::uses_tma() const { return impl_->tma; }
int64_t DeviceMultiVectors::device_bytes() const {
  return static_cast<int64_t>(impl_->data.bytes + impl_->offsets.bytes + impl_->row_doc.bytes);
}
double DeviceMultiVectors::last_kernel_seconds() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->last_seconds;
}

std::unique_ptr<DeviceMultiVectors> DeviceMultiVectors::Upload(const MultiVectorSet& docs, VectorFormat format, int device) {
  std::string why;
  const int devices = DeviceCount(&why);
  if (devices == 0) throw CoreError("ERR_DEVICE", why);
  if (device < 0 || device >= devices)
    throw CoreError("ERR_DEVICE", "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(devices) + " visible)");
  if (format != VectorFormat::kF32 && format != VectorFormat::kBF16)
    throw CoreError("ERR_INPUT", "GPU documents are stored as f32 or bf16, not " + std::string(VectorFormatName(format)));
  if (docs.format != VectorFormat::kF32 && docs.format != VectorFormat::kBF16)
    throw CoreError("ERR_INPUT", "upload fp32 or bf16 documents to the GPU (int8 documents have no GPU kernel)");
  if (docs.dim < 1 || docs.count < 0) throw CoreError("ERR_INPUT", "documents need a positive dim");
  OnDevice on(device);
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  impl->format = format;
  impl->dim = docs.dim;
  impl->dim_pad = Pad16(docs.dim);
  impl->count = docs.count;
  impl->rows = docs.count > 0 ? docs.offsets[docs.count] : 0;
  cudaDeviceProp p{};
  Check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  impl->sms = p.multiProcessorCount;
  impl->smem_limit = p.sharedMemPerBlockOptin;
  impl->compute_major = p.major;
  if (format == VectorFormat::kBF16 && p.major < 8)
    throw CoreError("ERR_DEVICE", DeviceName(device) + " has no bf16 tensor cores (compute capability 8.0 or newer); upload f32");
  // The kernels may use all of a block's opt-in shared memory: set once to the device's maximum
  // (the same value from every thread), never per call, where concurrent callers would race.
  Check(cudaFuncSetAttribute(MaxSimBf16Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(p.sharedMemPerBlockOptin)),
        "cudaFuncSetAttribute");
  Check(cudaFuncSetAttribute(MaxSimF32Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(p.sharedMemPerBlockOptin)),
        "cudaFuncSetAttribute");
  // BGE_M3_CUDA_WGMMA=0 keeps Hopper on the mma.sync kernels.
  const char* wgmma_env = std::getenv("BGE_M3_CUDA_WGMMA");
  if (format == VectorFormat::kBF16 && p.major == 9 && p.minor == 0 && !(wgmma_env && std::strcmp(wgmma_env, "0") == 0)) {
    DeviceBuffer flag;
    flag.Allocate(sizeof(int), "a probe");
    wg::ProbeWgmmaKernel<<<1, 1>>>(static_cast<int*>(flag.ptr));
    Check(cudaGetLastError(), "kernel launch");
    int has = 0;
    Check(cudaMemcpy(&has, flag.ptr, sizeof(int), cudaMemcpyDeviceToHost), "cudaMemcpy");
    impl->wgmma = has == 1;
  }
  if (format == VectorFormat::kBF16) {
    ForEachTiled([&](auto kernel, size_t smem) {
      if (smem <= p.sharedMemPerBlockOptin)
        Check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)), "cudaFuncSetAttribute");
    });
  }
  if (format == VectorFormat::kBF16) {
    cudaFuncAttributes attr{};
    Check(cudaFuncGetAttributes(&attr, MaxSimBf16Kernel), "cudaFuncGetAttributes");
    if (std::max(attr.binaryVersion, attr.ptxVersion) < 80)
      throw CoreError("ERR_DEVICE", "this build's CUDA kernels target no architecture with bf16 tensor cores (8.0+); rebuild with "
                                    "CMAKE_CUDA_ARCHITECTURES including 80 or 90, or upload f32");
  }
  {
    // A 16-row slice of documents and 16 query rows must fit shared memory.
    const size_t elem_bytes = format == VectorFormat::kBF16 ? 2 : 4;
    const size_t need = 16 * (Pad16(docs.dim) + kStagePad) * elem_bytes + 16 * sizeof(float) + kWarps * 16 * kScratchLd * sizeof(float);
    if (need > p.sharedMemPerBlockOptin)
      throw CoreError("ERR_INPUT", "vectors of " + std::to_string(docs.dim) + " dimensions do not fit the GPU kernel's shared memory");
  }
  for (int64_t i = 0; i < docs.count; ++i)
    if (docs.offsets[i + 1] < docs.offsets[i]) throw CoreError("ERR_INPUT", "document offsets must be non-decreasing");

  const size_t elem = format == VectorFormat::kBF16 ? 2 : 4;
  impl->data.Allocate(static_cast<size_t>(impl->rows) * impl->dim_pad * elem, "the documents");
  impl->offsets.Allocate((docs.count + 1) * sizeof(uint32_t), "the document offsets");
  Check(cudaEventCreate(&impl->start), "cudaEventCreate");
  Check(cudaEventCreate(&impl->stop), "cudaEventCreate");
  impl->host_offsets.assign(docs.offsets, docs.offsets + docs.count + 1);
  if (format == VectorFormat::kBF16 && impl->rows > 0) {
    std::vector<int> row_doc(static_cast<size_t>(impl->rows));
    for (int64_t d = 0; d < docs.count; ++d)
      std::fill(row_doc.begin() + docs.offsets[d], row_doc.begin() + docs.offsets[d + 1], static_cast<int>(d));
    impl->row_doc.Allocate(row_doc.size() * sizeof(int), "the row index");
    Check(cudaMemcpy(impl->row_doc.ptr, row_doc.data(), row_doc.size() * sizeof(int), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  if (docs.count > 0)
    Check(cudaMemcpy(impl->offsets.ptr, docs.offsets, (docs.count + 1) * sizeof(uint32_t), cudaMemcpyHostToDevice), "cudaMemcpy");
  // Converted and padded on the host in slices, so host memory stays bounded.
  const int64_t slice = std::max<int64_t>(1, (64 << 20) / (impl->dim_pad * static_cast<int64_t>(elem)));
  std::vector<unsigned char> staging(static_cast<size_t>(std::min(slice, std::max<int64_t>(impl->rows, 1)) * impl->dim_pad * elem));
  auto non_finite = [&docs](int64_t r) {  // the error for row r, naming its document
    const int64_t doc = std::upper_bound(docs.offsets, docs.offsets + docs.count + 1, static_cast<uint32_t>(r)) - docs.offsets - 1;
    return CoreError("ERR_INPUT", "document " + std::to_string(doc) + " row " + std::to_string(r - docs.offsets[doc]) +
                                      " holds a non-finite value");
  };
  for (int64_t r0 = 0; r0 < impl->rows; r0 += slice) {
    const int64_t r1 = std::min(impl->rows, r0 + slice);
    if (docs.format == VectorFormat::kF32) {  // whole padded rows, vectorised
      const int64_t bad = PackRows(static_cast<const float*>(docs.data) + r0 * docs.dim, r1 - r0, docs.dim, impl->dim_pad,
                                   format == VectorFormat::kBF16, staging.data());
      if (bad >= 0) throw non_finite(r0 + bad);
    } else {  // bf16 documents: bits kept for bf16, widened for fp32
      std::fill(staging.begin(), staging.end(), 0);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t k = 0; k < docs.dim; ++k) {
          const uint16_t b = static_cast<const uint16_t*>(docs.data)[r * docs.dim + k];
          const float x = Bf16ToFloat(b);
          if (!std::isfinite(x)) throw non_finite(r);
          unsigned char* dst = staging.data() + ((r - r0) * impl->dim_pad + k) * elem;
          if (format == VectorFormat::kBF16) std::memcpy(dst, &b, 2);
          else std::memcpy(dst, &x, 4);
        }
      }
    }
    Check(cudaMemcpy(static_cast<unsigned char*>(impl->data.ptr) + r0 * impl->dim_pad * elem, staging.data(),
                     (r1 - r0) * impl->dim_pad * elem, cudaMemcpyHostToDevice),
          "cudaMemcpy");
  }
#ifdef M3_HAVE_TMA
  const char* tma_env = std::getenv("BGE_M3_CUDA_TMA");  // 0: no tensor-map kernels (the wgmma and mma ones take over)
  if (impl->wgmma && impl->rows > 0 && !(tma_env && std::strcmp(tma_env, "0") == 0))
    impl->tma = MakeTensorMap(&impl->docs_map, impl->data.ptr, impl->dim_pad, impl->rows, tma::kDocBoxRows);
#endif
  return std::unique_ptr<DeviceMultiVectors>(new DeviceMultiVectors(std::move(impl)));
}

void DeviceMultiVectors::MaxSimBatch(const float* queries, const uint32_t* query_offsets, int64_t num_queries, float* scores,
                                     Kernel kernel, int tile_config) const {
  const Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  m.last_seconds = 0;
  if (num_queries <= 0) return;
  if (m.count == 0) return;
  // Every value finite before any GPU work.
  const int64_t bad_row = FirstNonFiniteRow(queries, query_offsets[num_queries], m.dim);
  if (bad_row >= 0) throw CoreError("ERR_INPUT", "query row " + std::to_string(bad_row) + " holds a non-finite value");
  OnDevice on(m.device);
  const bool bf16 = m.format == VectorFormat::kBF16;
  const size_t elem = bf16 ? 2 : 4;
  DeviceBuffer &d_queries = m.queries_buf, &d_offsets = m.query_offsets_buf, &d_scores = m.scores_buf, &d_rowmax = m.rowmax_buf;
  d_scores.Reserve(static_cast<size_t>(num_queries) * m.count * sizeof(float), "the scores");
  cudaEvent_t start = m.start, stop = m.stop;
  float total_ms = 0;
  // Queries in groups of at most kMaxQueryRows padded rows (the staged kernel keeps their running
  // maxima in shared memory; the tiled ones bound their per-row maxima by it).
  for (int64_t q0 = 0; q0 < num_queries;) {
    int64_t q1 = q0 + 1;
    while (q1 < num_queries && Pad16(query_offsets[q1 + 1] - query_offsets[q0]) <= kMaxQueryRows) ++q1;
    const int64_t rows = query_offsets[q1] - query_offsets[q0];
    const int64_t rows_pad = bf16 ? Pad16(rows) : rows;
    if (rows_pad > kMaxQueryRows)
      throw CoreError("ERR_INPUT", "query " + std::to_string(q0) + " has " + std::to_string(rows) + " rows; the GPU kernel takes at most " +
                                       std::to_string(kMaxQueryRows));
    std::vector<unsigned char> host(static_cast<size_t>(std::max<int64_t>(rows_pad, 1) * m.dim_pad * elem), 0);
    PackRows(queries + static_cast<int64_t>(query_offsets[q0]) * m.dim, rows, m.dim, m.dim_pad, bf16, host.data());  // checked finite above
    std::vector<uint32_t> offsets(static_cast<size_t>(q1 - q0 + 1));
    for (int64_t q = q0; q <= q1; ++q) offsets[q - q0] = query_offsets[q] - query_offsets[q0];
    d_queries.Reserve(host.size(), "the queries");
    d_offsets.Reserve(offsets.size() * sizeof(uint32_t), "the query offsets");
    Check(cudaMemcpy(d_queries.ptr, host.data(), host.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
    Check(cudaMemcpy(d_offsets.ptr, offsets.data(), offsets.size() * sizeof(uint32_t), cudaMemcpyHostToDevice), "cudaMemcpy");

    float* out = static_cast<float*>(d_scores.ptr) + q0 * m.count;
    const TiledConfig* shape = bf16 && kernel != Kernel::kStaged ? PickTiled(rows_pad, m.smem_limit, m.wgmma, m.tma, tile_config) : nullptr;
    Check(cudaEventRecord(start), "cudaEventRecord");
    if (shape) {
      // Per (query row, document) maxima for a chunk of documents at a time, then the means.
      const int64_t qrows = std::max<int64_t>(rows, 1);
      const int64_t chunk_max = std::max<int64_t>(1, kRowMaxBudget / (qrows * static_cast<int64_t>(sizeof(float))));
      d_rowmax.Reserve(static_cast<size_t>(std::min(chunk_max, m.count) * qrows) * sizeof(float), "the per-row maxima");
      float* rowmax = static_cast<float*>(d_rowmax.ptr);
      const auto* dev_offsets = static_cast<const uint32_t*>(m.offsets.ptr);
#ifdef M3_HAVE_TMA
      CUtensorMap queries_map{};
      if (shape->tma && rows > 0 && !MakeTensorMap(&queries_map, d_queries.ptr, m.dim_pad, rows_pad, tma::kQueryBoxRows))
        throw CoreError("ERR_DEVICE", "CUDA could not describe the queries for the tensor-map kernel");
#endif
      for (int64_t d0 = 0; d0 < m.count; d0 += chunk_max) {
        const int64_t d1 = std::min(m.count, d0 + chunk_max), chunk = d1 - d0;
        const int64_t row_begin = m.host_offsets[d0], row_end = m.host_offsets[d1];
        if (row_end > row_begin && rows > 0) {
          const int64_t fill = chunk * rows;
          tiled::FillKernel<<<static_cast<int>(std::min<int64_t>((fill + 255) / 256, m.sms * 8LL)), 256>>>(rowmax, fill, -INFINITY);
          const int64_t m_tiles = (rows_pad + shape->bm - 1) / shape->bm;
          const int64_t n_tiles = (row_end - row_begin + shape->bn - 1) / shape->bn;
          static_assert(tiled::kThreads == wg::kThreads, "one block size");
          const unsigned blocks = static_cast<unsigned>(m_tiles * n_tiles);
          if (shape->tma) {
#ifdef M3_HAVE_TMA
            // Persistent: as many blocks (clusters) as fit on the device at once, each looping over tiles.
            const int cs = shape->cluster;
            cudaLaunchAttribute attr{};
            attr.id = cudaLaunchAttributeClusterDimension;
            attr.val.clusterDim.x = static_cast<unsigned>(cs);
            attr.val.clusterDim.y = 1;
            attr.val.clusterDim.z = 1;
            cudaLaunchConfig_t launch{};
            launch.gridDim = dim3(static_cast<unsigned>(cs));
            launch.blockDim = dim3(tma::kThreads);
            launch.dynamicSmemBytes = shape->smem;
            int resident = 0;  // clusters (blocks where cs = 1) the device holds at once
            if (cs > 1) {
              launch.attrs = &attr;
              launch.numAttrs = 1;
              Check(cudaOccupancyMaxActiveClusters(&resident, shape->tma, &launch), "cudaOccupancyMaxActiveClusters");
              if (resident < 1)
                throw CoreError("ERR_DEVICE", std::string("this GPU cannot hold one cluster of ") + std::to_string(cs) + " blocks of " +
                                                  std::to_string(shape->smem >> 10) + " KiB shared memory each (configuration " +
                                                  shape->name + "); name another configuration");
            } else {
              Check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, shape->tma, tma::kThreads, shape->smem),
                    "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
              resident *= m.sms;
            }
            const int64_t cluster_tiles = (m_tiles + cs - 1) / cs * n_tiles;
            launch.gridDim = dim3(static_cast<unsigned>(cs * std::min<int64_t>(cluster_tiles, std::max(resident, 1))));
            Check(cudaLaunchKernelEx(&launch, shape->tma, queries_map, m.docs_map, row_begin, row_end,
                                     static_cast<const int*>(m.row_doc.ptr), d0, chunk, static_cast<int>(m.dim_pad),
                                     static_cast<int>(rows), static_cast<int>(rows_pad), rowmax),
                  "cudaLaunchKernelEx");
#endif
          } else {
            shape->fn<<<blocks, tiled::kThreads, shape->smem>>>(
                static_cast<const __nv_bfloat16*>(m.data.ptr), row_begin, row_end, static_cast<const int*>(m.row_doc.ptr), d0, chunk,
                static_cast<int>(m.dim_pad), static_cast<const __nv_bfloat16*>(d_queries.ptr), static_cast<int>(rows),
                static_cast<int>(rows_pad), rowmax);
          }
        }
        const dim3 mean_grid(static_cast<unsigned>((chunk + 255) / 256), static_cast<unsigned>(std::min<int64_t>(q1 - q0, 65535)));
        tiled::MeanOfMaximaKernel<<<mean_grid, 256>>>(rowmax, chunk, dev_offsets + d0, static_cast<const uint32_t*>(d_offsets.ptr),
                                                       static_cast<int>(q1 - q0), out + d0, m.count);
      }
    } else {
      // Document rows staged per slice: as many as shared memory holds next to the maxima.
      const size_t fixed = rows_pad * sizeof(float) + (bf16 ? kWarps * 16 * kScratchLd * sizeof(float) : 0);
      const size_t per_row = (m.dim_pad + (bf16 ? kStagePad : 0)) * elem;
      int64_t tile_rows = m.smem_limit > fixed ? static_cast<int64_t>((m.smem_limit - fixed) / per_row) : 0;
      tile_rows = std::min<int64_t>(tile_rows, bf16 ? 64 : 32);
      if (bf16) tile_rows = tile_rows / 16 * 16;
      if (tile_rows < (bf16 ? 16 : 1))
        throw CoreError("ERR_INPUT", "vectors of " + std::to_string(m.dim) + " dimensions do not fit the GPU's shared memory");
      const size_t smem = fixed + static_cast<size_t>(tile_rows) * per_row;
      const int grid = static_cast<int>(std::min<int64_t>(m.count, static_cast<int64_t>(m.sms) * 16));
      if (bf16) {
        MaxSimBf16Kernel<<<grid, kThreads, smem>>>(static_cast<const __nv_bfloat16*>(m.data.ptr), static_cast<const uint32_t*>(m.offsets.ptr),
                                                   m.count, static_cast<int>(m.dim_pad), static_cast<int>(tile_rows),
                                                   static_cast<const __nv_bfloat16*>(d_queries.ptr), static_cast<int>(rows_pad),
                                                   static_cast<const uint32_t*>(d_offsets.ptr), static_cast<int>(q1 - q0), out, m.count);
      } else {
        MaxSimF32Kernel<<<grid, kThreads, smem>>>(static_cast<const float*>(m.data.ptr), static_cast<const uint32_t*>(m.offsets.ptr),
                                                  m.count, static_cast<int>(m.dim_pad), static_cast<int>(tile_rows),
                                                  static_cast<const float*>(d_queries.ptr), static_cast<int>(rows),
                                                  static_cast<const uint32_t*>(d_offsets.ptr), static_cast<int>(q1 - q0), out, m.count);
      }
    }
    Check(cudaGetLastError(), "kernel launch");
    Check(cudaEventRecord(stop), "cudaEventRecord");
    Check(cudaEventSynchronize(stop), "the MaxSim kernel");
    float ms = 0;
    Check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    total_ms += ms;
    q0 = q1;
  }
  Check(cudaMemcpy(scores, d_scores.ptr, static_cast<size_t>(num_queries) * m.count * sizeof(float), cudaMemcpyDeviceToHost),
        "cudaMemcpy");
  m.last_seconds = total_ms / 1000.0;
}

}  // namespace cuda
}  // namespace m3
