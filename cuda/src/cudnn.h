// cuDNN 9 at run time, for Conv: opened with dlopen like cuBLASLt (cublaslt.h), optional. The
// legacy convolution API (cudnnConvolutionForward and its descriptors), which libcudnn.so.9's
// shim exports. Where no cuDNN loads, or it refuses a conv, ops_conv.cpp runs its im2col +
// cuBLASLt path. Plain C++ (no CUDA or cuDNN headers): the enum values and the perf struct come
// from cuDNN 9's cudnn_graph.h / cudnn_ops.h / cudnn_cnn.h (9.28) and are ABI-stable in 9.x.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ember/device.h"

namespace ember::cuda {

namespace dnn {

using Status = int;  // cudnnStatus_t
using Handle = void*;
using TensorDesc = void*;
using FilterDesc = void*;
using ConvDesc = void*;

constexpr Status kSuccess = 0;
constexpr int kFloat = 0, kHalf = 2, kBFloat16 = 9;  // cudnnDataType_t
constexpr int kNchw = 0;                             // cudnnTensorFormat_t
constexpr int kCrossCorrelation = 1;                 // cudnnConvolutionMode_t
constexpr int kDefaultMath = 0, kTensorOpMath = 1, kFmaMath = 3;  // cudnnMathType_t
constexpr int kDeterministic = 1;                    // cudnnDeterminism_t

// cudnnConvolutionFwdAlgoPerf_t
struct AlgoPerf {
  int algo;
  Status status;
  float time;
  size_t memory;
  int determinism;
  int math_type;
  int reserved[3];
};

struct Api {
  void* lib = nullptr;
  std::string path;
  size_t version = 0;
  size_t (*get_version)() = nullptr;
  const char* (*get_error_string)(Status) = nullptr;
  Status (*create)(Handle*) = nullptr;
  Status (*set_stream)(Handle, void* stream) = nullptr;
  Status (*create_tensor_desc)(TensorDesc*) = nullptr;
  Status (*set_tensor_nd)(TensorDesc, int type, int nb, const int dims[],
                          const int strides[]) = nullptr;
  Status (*destroy_tensor_desc)(TensorDesc) = nullptr;
  Status (*create_filter_desc)(FilterDesc*) = nullptr;
  Status (*set_filter_nd)(FilterDesc, int type, int format, int nb, const int dims[]) = nullptr;
  Status (*destroy_filter_desc)(FilterDesc) = nullptr;
  Status (*create_conv_desc)(ConvDesc*) = nullptr;
  Status (*set_conv_nd)(ConvDesc, int nb, const int pads[], const int strides[],
                        const int dilations[], int mode, int compute_type) = nullptr;
  Status (*set_conv_group_count)(ConvDesc, int groups) = nullptr;
  Status (*set_conv_math_type)(ConvDesc, int math) = nullptr;
  Status (*destroy_conv_desc)(ConvDesc) = nullptr;
  Status (*get_output_dim)(ConvDesc, TensorDesc x, FilterDesc w, int nb, int dims[]) = nullptr;
  Status (*get_algorithm_v7)(Handle, TensorDesc x, FilterDesc w, ConvDesc, TensorDesc y,
                             int requested, int* returned, AlgoPerf* results) = nullptr;
  Status (*get_workspace_size)(Handle, TensorDesc x, FilterDesc w, ConvDesc, TensorDesc y,
                               int algo, size_t* bytes) = nullptr;
  Status (*forward)(Handle, const void* alpha, TensorDesc x, const void* xp, FilterDesc w,
                    const void* wp, ConvDesc, int algo, void* workspace, size_t workspace_bytes,
                    const void* beta, TensorDesc y, void* yp) = nullptr;
};

}  // namespace dnn

// The paths cudnn_open tries: explicit_path (Python passes the nvidia-cudnn wheel's
// libcudnn.so.9), $EMBER_CUDNN (env_value), "libcudnn.so.9", "libcudnn.so".
std::vector<std::string> cudnn_candidates(const std::string& explicit_path, const char* env_value);
// Opens the first candidate with every entry point and version 9.x; false with each path's
// reason in `error`.
bool cudnn_open(const std::vector<std::string>& candidates, dnn::Api* api, std::string* error);
// Process-wide, once (thread-safe; a failure is remembered: Conv then takes its own path).
bool cudnn_load(const std::string& explicit_path, std::string* error);
// The loaded library, or nullptr where none loaded.
const dnn::Api* cudnn_api();

// One 2-D cross-correlation y = alpha * conv(x, w) + beta * y over NCHW tensors of `type`
// (dnn::kFloat, kHalf, kBFloat16; accumulation in float), x [N, C, H, W], w [M, C / G, kh, kw],
// y [N, M, OH, OW], pads symmetric (ph, pw on both sides). math: dnn::kFmaMath for fp32 (no
// TF32), kTensorOpMath for 16-bit data.
struct DnnConv {
  int64_t N, C, H, W, M, G, kh, kw, sh, sw, dh, dw, ph, pw, OH, OW;
  int type = dnn::kFloat;
  int math = dnn::kFmaMath;
};
// One conv's descriptors, built once. refused(): "" where cuDNN takes the conv, else why not
// (descriptors refused, or its output size is not OH x OW); no handle or GPU needed, so host
// tests check it too. forward() enqueues it on `stream` with the heuristic's first algorithm
// that needs at most `max_workspace` bytes (workspace(bytes) provides them), picked once per
// conv and device; false, with `why`, where none fits (the caller runs its own path). Throws
// an ember Error on a failed launch.
class CudnnConv {
 public:
  CudnnConv(const dnn::Api& api, const DnnConv& c);
  ~CudnnConv();
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;
  const std::string& refused() const;
  bool forward(const void* x, const void* w, void* y, float beta, size_t max_workspace,
               const std::function<void*(size_t)>& workspace, void* stream, int device_ordinal,
               std::string* why);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ember::cuda
