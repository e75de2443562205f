// BGE-M3's heads on the GPU (see heads_cuda.h).
//   dense:   one block per text: the CLS row's squared norm (fp64 partial sums, as NormalizeL2),
//            then the row divided by max(norm, 1e-12);
//   sparse:  one warp per token: ReLU(h . w + b), 0 past the text's length;
//   ColBERT: an fp32 tiled product of the gathered token rows (every text's tokens after CLS,
//            packed) with the weight, plus the bias, then one warp per row normalising it.
// fp16 and bf16 hidden states are widened as each kernel loads them: no fp32 copy of the batch.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cuda/cuda_util.cuh"
#include "kernels/cuda/heads_cuda.h"

namespace m3 {
namespace cuda {

namespace {

using util::Check;
using util::DeviceBuffer;
using util::OnDevice;

// Hidden states are read as fp32, fp16 or bf16 (widened exactly on load).
__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__global__ void DenseKernel(const T* __restrict__ hidden, int64_t len, int hidden_dim, float* __restrict__ dense) {
  __shared__ double partial[256];
  const T* row = hidden + static_cast<int64_t>(blockIdx.x) * len * hidden_dim;  // CLS of text blockIdx.x
  double sum = 0.0;
  for (int k = threadIdx.x; k < hidden_dim; k += blockDim.x) sum += static_cast<double>(ToFloat(row[k])) * ToFloat(row[k]);
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
    __syncthreads();
  }
  const float norm = fmaxf(static_cast<float>(sqrt(partial[0])), 1e-12f);
  for (int k = threadIdx.x; k < hidden_dim; k += blockDim.x) dense[static_cast<int64_t>(blockIdx.x) * hidden_dim + k] = ToFloat(row[k]) / norm;
}

template <typename T>
__global__ void SparseKernel(const T* __restrict__ hidden, int64_t batch, int64_t len, int hidden_dim,
                             const int64_t* __restrict__ lengths, const float* __restrict__ w, float bias, float* __restrict__ out) {
  const int64_t token = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (token >= batch * len) return;
  const int64_t b = token / len, t = token % len;
  float acc = 0.0f;
  if (t < lengths[b]) {
    const T* row = hidden + token * hidden_dim;
    for (int k = lane; k < hidden_dim; k += 32) acc = fmaf(ToFloat(row[k]), w[k], acc);
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    acc = fmaxf(acc + bias, 0.0f);
  }
  if (lane == 0) out[token] = acc;
}

constexpr int kTile = 64, kTileK = 16;

/// out[p][d] = sum_k hidden[src_row[p]][k] * weight[d][k] + bias[d] for p < rows, d < dim.
/// 64 x 64 output tiles, 256 threads of 4 x 4 outputs each.
template <typename T>
__global__ void __launch_bounds__(256) ColbertLinearKernel(const T* __restrict__ hidden, const int64_t* __restrict__ src_row,
                                                           int64_t rows, int hidden_dim, const float* __restrict__ weight,
                                                           const float* __restrict__ bias, int dim, float* __restrict__ out) {
  __shared__ float a_s[kTileK][kTile + 4];
  __shared__ float b_s[kTileK][kTile + 4];
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTile;  // rows on x: up to 2^31 - 1 tiles
  const int d0 = blockIdx.y * kTile;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < hidden_dim; k0 += kTileK) {
    // 64 rows x 16 k of each operand: 1,024 values, 4 per thread, transposed into [k][row].
    for (int i = threadIdx.x; i < kTile * kTileK; i += 256) {
      const int r = i / kTileK, k = i % kTileK;
      const int64_t p = r0 + r;
      a_s[k][r] = p < rows && k0 + k < hidden_dim ? ToFloat(hidden[src_row[p] * hidden_dim + k0 + k]) : 0.0f;
      const int d = d0 + r;
      b_s[k][r] = d < dim && k0 + k < hidden_dim ? weight[static_cast<int64_t>(d) * hidden_dim + k0 + k] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTileK; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = a_s[k][ty * 4 + i];
        b[i] = b_s[k][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t p = r0 + ty * 4 + i;
    if (p >= rows) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int d = d0 + tx * 4 + j;
      if (d < dim) out[p * dim + d] = acc[i][j] + bias[d];
    }
  }
}

/// Each of `rows` rows of `dim` floats divided by max(its L2 norm, 1e-12); one warp per row.
__global__ void NormalizeRowsKernel(float* __restrict__ x, int64_t rows, int dim) {
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  float* row = x + r * dim;
  double sum = 0.0;
  for (int k = lane; k < dim; k += 32) sum += static_cast<double>(row[k]) * row[k];
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float norm = fmaxf(static_cast<float>(sqrt(sum)), 1e-12f);
  for (int k = lane; k < dim; k += 32) row[k] /= norm;
}

}  // namespace

struct DeviceHeads::Impl {
  int device = 0;
  int64_t hidden = 0, dim = 0;
  float sparse_bias = 0.0f;
  DeviceBuffer colbert_weight, colbert_bias, sparse_weight;
  // The heads' own stream: waiting for it does not wait for other work on the device (other
  // sessions' inference), and other work's errors do not surface here.
  cudaStream_t stream = nullptr;
  mutable std::mutex mu;  // one batch at a time: the scratch below
  mutable DeviceBuffer hidden_in, lengths, src_rows, dense_out, sparse_out, colbert_out;
  ~Impl() {
    if (stream) cudaStreamDestroy(stream);
  }
};

DeviceHeads::DeviceHeads(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceHeads::~DeviceHeads() {
  if (!impl_) return;
  int previous = 0;
  const bool restore = cudaGetDevice(&previous) == cudaSuccess;
  cudaSetDevice(impl_->device);
  impl_.reset();
  if (restore) cudaSetDevice(previous);
}

int64_t DeviceHeads::hidden() const { return impl_->hidden; }
int64_t DeviceHeads::dim() const { return impl_->dim; }

std::unique_ptr<DeviceHeads> DeviceHeads::Upload(const float* colbert_weight, const float* colbert_bias, int64_t dim, int64_t hidden,
                                                 const float* sparse_weight, float sparse_bias, int device) {
  if (dim <= 0 || hidden <= 0) throw CoreError("ERR_INPUT", "the heads need positive sizes");
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    throw CoreError("ERR_DEVICE", "no usable CUDA device for the heads");
  }
  if (device < 0 || device >= devices)
    throw CoreError("ERR_DEVICE", "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(devices) + " visible)");
  OnDevice on(device);
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  impl->hidden = hidden;
  impl->dim = dim;
  impl->sparse_bias = sparse_bias;
  // An image of every kernel for this device (else the heads stay on the CPU; a launch would
  // fail at the first batch otherwise).
  for (const void* kernel : {reinterpret_cast<const void*>(DenseKernel<float>), reinterpret_cast<const void*>(SparseKernel<float>),
                             reinterpret_cast<const void*>(ColbertLinearKernel<float>), reinterpret_cast<const void*>(NormalizeRowsKernel),
                             reinterpret_cast<const void*>(DenseKernel<__half>), reinterpret_cast<const void*>(SparseKernel<__half>),
                             reinterpret_cast<const void*>(ColbertLinearKernel<__half>),
                             reinterpret_cast<const void*>(DenseKernel<__nv_bfloat16>),
                             reinterpret_cast<const void*>(SparseKernel<__nv_bfloat16>),
                             reinterpret_cast<const void*>(ColbertLinearKernel<__nv_bfloat16>)}) {
    cudaFuncAttributes attr{};
    const cudaError_t err = cudaFuncGetAttributes(&attr, kernel);
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw CoreError("ERR_DEVICE", std::string("the GPU heads cannot run on this device: ") + cudaGetErrorString(err) +
                                        " (rebuild with CMAKE_CUDA_ARCHITECTURES including its architecture)");
    }
  }
  Check(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  impl->colbert_weight.Allocate(static_cast<size_t>(dim * hidden) * sizeof(float), "the ColBERT head");
  impl->colbert_bias.Allocate(static_cast<size_t>(dim) * sizeof(float), "the ColBERT head");
  impl->sparse_weight.Allocate(static_cast<size_t>(hidden) * sizeof(float), "the sparse head");
  Check(cudaMemcpy(impl->colbert_weight.ptr, colbert_weight, impl->colbert_weight.bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  Check(cudaMemcpy(impl->colbert_bias.ptr, colbert_bias, impl->colbert_bias.bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  Check(cudaMemcpy(impl->sparse_weight.ptr, sparse_weight, impl->sparse_weight.bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  return std::unique_ptr<DeviceHeads>(new DeviceHeads(std::move(impl)));
}

namespace {

void CheckLengths(int64_t batch, int64_t len, const int64_t* lengths) {
  for (int64_t b = 0; b < batch; ++b)
    if (lengths[b] < 1 || lengths[b] > len)
      throw CoreError("ERR_INPUT", "text " + std::to_string(b) + " has " + std::to_string(lengths[b]) + " tokens; expected 1 to " +
                                       std::to_string(len));
}

size_t ElementBytes(HiddenFormat format) { return format == HiddenFormat::kF32 ? 4 : 2; }

/// The heads on device hidden states of element type T; the caller holds m.mu and has made
/// m.device current.
template <typename T>
void RunTyped(const DeviceHeads::Impl& m, const T* hidden_states, int64_t batch, int64_t len, const int64_t* lengths, float* dense,
              float* sparse, float* colbert) {
  const int hidden = static_cast<int>(m.hidden), dim = static_cast<int>(m.dim);
  if (dense) {
    m.dense_out.Reserve(static_cast<size_t>(batch * hidden) * sizeof(float), "the dense vectors");
    DenseKernel<T><<<static_cast<unsigned>(batch), 256, 0, m.stream>>>(hidden_states, len, hidden, m.dense_out.as<float>());
    Check(cudaGetLastError(), "kernel launch");
  }
  if (sparse) {
    m.lengths.Reserve(static_cast<size_t>(batch) * sizeof(int64_t), "the lengths");
    Check(cudaMemcpyAsync(m.lengths.ptr, lengths, static_cast<size_t>(batch) * sizeof(int64_t), cudaMemcpyHostToDevice, m.stream),
          "cudaMemcpyAsync");
    m.sparse_out.Reserve(static_cast<size_t>(batch * len) * sizeof(float), "the token weights");
    const int64_t threads = batch * len * 32;
    SparseKernel<T><<<static_cast<unsigned>((threads + 255) / 256), 256, 0, m.stream>>>(hidden_states, batch, len, hidden, m.lengths.as<int64_t>(),
                                                                         m.sparse_weight.as<float>(), m.sparse_bias, m.sparse_out.as<float>());
    Check(cudaGetLastError(), "kernel launch");
  }
  int64_t rows = 0;
  if (colbert) {
    std::vector<int64_t> src;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t t = 1; t < lengths[b]; ++t) src.push_back(b * len + t);
    rows = static_cast<int64_t>(src.size());
    if (rows > 0) {
      m.src_rows.Reserve(src.size() * sizeof(int64_t), "the row index");
      Check(cudaMemcpyAsync(m.src_rows.ptr, src.data(), src.size() * sizeof(int64_t), cudaMemcpyHostToDevice, m.stream),
            "cudaMemcpyAsync");
      m.colbert_out.Reserve(static_cast<size_t>(rows * dim) * sizeof(float), "the ColBERT rows");
      const dim3 grid(static_cast<unsigned>((rows + kTile - 1) / kTile), static_cast<unsigned>((dim + kTile - 1) / kTile));
      ColbertLinearKernel<T><<<grid, 256, 0, m.stream>>>(hidden_states, m.src_rows.as<int64_t>(), rows, hidden, m.colbert_weight.as<float>(),
                                         m.colbert_bias.as<float>(), dim, m.colbert_out.as<float>());
      Check(cudaGetLastError(), "kernel launch");
      NormalizeRowsKernel<<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, m.stream>>>(m.colbert_out.as<float>(), rows, dim);
      Check(cudaGetLastError(), "kernel launch");
    }
  }
  if (dense)
    Check(cudaMemcpyAsync(dense, m.dense_out.ptr, static_cast<size_t>(batch * hidden) * sizeof(float), cudaMemcpyDeviceToHost, m.stream),
          "cudaMemcpyAsync");
  if (sparse)
    Check(cudaMemcpyAsync(sparse, m.sparse_out.ptr, static_cast<size_t>(batch * len) * sizeof(float), cudaMemcpyDeviceToHost, m.stream),
          "cudaMemcpyAsync");
  if (colbert && rows > 0)
    Check(cudaMemcpyAsync(colbert, m.colbert_out.ptr, static_cast<size_t>(rows * dim) * sizeof(float), cudaMemcpyDeviceToHost, m.stream),
          "cudaMemcpyAsync");
  Check(cudaStreamSynchronize(m.stream), "the heads' kernels");
}

void RunLocked(const DeviceHeads::Impl& m, const void* hidden_states, HiddenFormat format, int64_t batch, int64_t len,
               const int64_t* lengths, float* dense, float* sparse, float* colbert) {
  switch (format) {
    case HiddenFormat::kF16:
      return RunTyped(m, static_cast<const __half*>(hidden_states), batch, len, lengths, dense, sparse, colbert);
    case HiddenFormat::kBF16:
      return RunTyped(m, static_cast<const __nv_bfloat16*>(hidden_states), batch, len, lengths, dense, sparse, colbert);
    default:
      return RunTyped(m, static_cast<const float*>(hidden_states), batch, len, lengths, dense, sparse, colbert);
  }
}

}  // namespace

void DeviceHeads::Run(const void* hidden_states, HiddenFormat format, int64_t batch, int64_t len, const int64_t* lengths, float* dense,
                      float* sparse, float* colbert) const {
  if (batch <= 0 || len <= 0) return;
  CheckLengths(batch, len, lengths);
  std::lock_guard<std::mutex> lock(impl_->mu);
  OnDevice on(impl_->device);
  try {
    RunLocked(*impl_, hidden_states, format, batch, len, lengths, dense, sparse, colbert);
  } catch (...) {
    cudaStreamSynchronize(impl_->stream);  // nothing launched may still read the caller's memory
    cudaGetLastError();
    throw;
  }
}

void DeviceHeads::RunHost(const void* hidden_states, HiddenFormat format, int64_t batch, int64_t len, const int64_t* lengths,
                          float* dense, float* sparse, float* colbert) const {
  if (batch <= 0 || len <= 0) return;
  CheckLengths(batch, len, lengths);
  std::lock_guard<std::mutex> lock(impl_->mu);
  OnDevice on(impl_->device);
  const size_t bytes = static_cast<size_t>(batch * len * impl_->hidden) * ElementBytes(format);
  impl_->hidden_in.Reserve(bytes, "the hidden states");
  Check(cudaMemcpyAsync(impl_->hidden_in.ptr, hidden_states, bytes, cudaMemcpyHostToDevice, impl_->stream), "cudaMemcpyAsync");
  try {
    RunLocked(*impl_, impl_->hidden_in.ptr, format, batch, len, lengths, dense, sparse, colbert);
  } catch (...) {
    cudaStreamSynchronize(impl_->stream);
    cudaGetLastError();
    throw;
  }
}

}  // namespace cuda
}  // namespace m3
