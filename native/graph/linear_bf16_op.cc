#include "graph/linear_bf16_op.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "base/error.h"
#include "graph/linear_rewrite.h"
#include "kernels/linear_bf16.h"

namespace m3 {
namespace {

struct Job {
  LinearBf16Args args;
  bool vector;
  size_t scratch;
};

void RunUnit(void* data, size_t unit) {
  const Job& job = *static_cast<const Job*>(data);
  thread_local std::vector<uint16_t> scratch;  // per ONNX Runtime thread, grown to the largest call
  if (scratch.size() < job.scratch) scratch.resize(job.scratch);
  LinearBf16RunUnit(job.vector, job.args, static_cast<int64_t>(unit), scratch.data());
}

struct LinearBf16Kernel {
  PackedLinearBf16 layer;

  explicit LinearBf16Kernel(const OrtKernelInfo* info) {
    Ort::ConstKernelInfo ki(info);
    int64_t trans_b = 0;  // optional: W stored [out, in]
    OrtStatus* status = Ort::GetApi().KernelInfoGetAttribute_int64(info, "trans_b", &trans_b);
    const bool transposed = status == nullptr && trans_b != 0;
    if (status) Ort::GetApi().ReleaseStatus(status);
    int constant = 0;
    const Ort::ConstValue w = ki.GetTensorConstantInput(1, &constant);
    if (!constant || !w) throw std::runtime_error("LinearBf16: the weight is not a constant initializer");
    const std::vector<int64_t> ws = w.GetTensorTypeAndShapeInfo().GetShape();
    if (ws.size() != 2) throw std::runtime_error("LinearBf16: the weight " + ShapeString(ws) + " is not 2-D");
    const int64_t in = transposed ? ws[1] : ws[0], out = transposed ? ws[0] : ws[1];
    const float* bias = nullptr;
    if (ki.GetInputCount() > 2) {
      const Ort::ConstValue b = ki.GetTensorConstantInput(2, &constant);
      if (!constant || !b) throw std::runtime_error("LinearBf16: the bias is not a constant initializer");
      const std::vector<int64_t> bs = b.GetTensorTypeAndShapeInfo().GetShape();
      if (bs.size() != 1 || bs[0] != out)
        throw std::runtime_error("LinearBf16: the bias " + ShapeString(bs) + " does not match the weight " + ShapeString(ws));
      bias = b.GetTensorData<float>();
    }
    const float* data = w.GetTensorData<float>();
    std::vector<float> kn;  // a weight stored [out, in], as [in, out] for packing
    if (transposed) {
      kn.resize(static_cast<size_t>(in * out));
      for (int64_t o = 0; o < out; ++o)
        for (int64_t k = 0; k < in; ++k) kn[k * out + o] = data[o * in + k];
      data = kn.data();
    }
    layer = PackLinearBf16(data, bias, in, out);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    try {
      Compute(Ort::KernelContext(context));
      return nullptr;
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, e.what());
    }
  }

  void Compute(Ort::KernelContext ctx) {
    const Ort::ConstValue x = ctx.GetInput(0);
    std::vector<int64_t> shape = x.GetTensorTypeAndShapeInfo().GetShape();
    if (shape.empty() || shape.back() != layer.in) {
      throw std::runtime_error("LinearBf16: the input " + ShapeString(shape) + " does not end in the weight's " +
                               std::to_string(layer.in) + " rows; load the model with precision 'fp32'");
    }
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
    shape.back() = layer.out;
    Ort::UnownedValue y = ctx.GetOutput(0, shape);
    if (rows == 0) return;
    Job job;
    job.args.layer = &layer;
    job.args.x = x.GetTensorData<float>();
    job.args.y = y.GetTensorMutableData<float>();
    job.args.rows = rows;
    job.vector = LinearBf16Accelerated();
    job.scratch = static_cast<size_t>(LinearBf16ScratchElems(job.args));
    ctx.ParallelFor(RunUnit, static_cast<size_t>(LinearBf16UnitCount(job.args)), 0, &job);
  }
};

struct LinearBf16Op : Ort::CustomOpBase<LinearBf16Op, LinearBf16Kernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    try {
      *kernel = new LinearBf16Kernel(info);
      return nullptr;
    } catch (const std::exception& e) {
      return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, e.what());
    }
  }
  const char* GetName() const { return kLinearBf16Op; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace

const OrtCustomOp* LinearBf16CustomOp() {
  static LinearBf16Op op;
  return &op;
}

}  // namespace m3
