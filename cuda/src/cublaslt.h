// cuBLASLt, opened at run time with dlopen: the CUDA toolkit ember builds against ships no
// cuBLAS, and users get the library from the nvidia-cublas wheel or a CUDA install. Only what
// ember calls is declared here; the types, enum values and signatures are copied from
// cublasLt.h and cublas_api.h of cuBLAS 13.10.0 (the nvidia-cublas 13.10.0.20 wheel), plus
// three cudaDataType values from the toolkit's library_types.h. The .so.13 ABI is stable across
// 13.x, so any 13.x library works (cublaslt_open checks the major version).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cuda/src/gemm_plan.h"
#include "ember/device.h"

namespace ember::cuda {

namespace lt {

using Status = int;  // cublasStatus_t
constexpr Status kSuccess = 0, kNotSupported = 15;

// cudaDataType (library_types.h)
constexpr int kR32F = 0, kR16F = 2, kR16BF = 14;
// cublasComputeType_t
constexpr int kCompute32F = 68, kCompute32FFast16F = 74, kCompute32FFast16BF = 75;
// int8 GEMM (QMatMul): int8 A / B, int32 C / D and scale (alpha, beta), exact integer sums.
// IMMA kernels on ORDER_COL layouts want "TN" (A transposed, B not), m, k and every leading
// dim a multiple of 4, pointers 4-byte (better 16-byte) aligned.
constexpr int kR8I = 3, kR32I = 10;
constexpr int kCompute32I = 72;
// cublasOperation_t
constexpr int32_t kOpN = 0, kOpT = 1;

// cublasLtMatrixLayoutAttribute_t
constexpr int kLayoutBatchCount = 5;          // int32_t
constexpr int kLayoutStridedBatchOffset = 6;  // int64_t, elements
// cublasLtMatmulDescAttributes_t
constexpr int kDescTransA = 3;                 // int32_t (cublasOperation_t)
constexpr int kDescTransB = 4;                 // int32_t
constexpr int kDescEpilogue = 7;               // uint32_t (cublasLtEpilogue_t)
constexpr int kDescBiasPointer = 8;            // const void*
constexpr int kDescBatchInvarianceFlags = 41;  // int32_t; experimental, 13.x after 13.0
// cublasLtEpilogue_t
constexpr uint32_t kEpilogueDefault = 1, kEpilogueBias = 4;
// cublasLtMatmulBatchInvarianceFlags_t
constexpr int32_t kBatchInvarianceAlign4B = 0x2;
// cublasLtMatmulPreferenceAttributes_t
constexpr int kPrefMaxWorkspaceBytes = 1;   // uint64_t
constexpr int kPrefReductionSchemeMask = 3;  // uint32_t (cublasLtReductionScheme_t mask)
constexpr int kPrefMinAlignmentA = 5;        // uint32_t bytes; B, C, D follow (6, 7, 8)
// cublasLtReductionScheme_t
constexpr uint32_t kReductionSchemeNone = 0;

// Opaque descriptors: only pointers made by the library's Create functions are held.
struct Context;
struct MatmulDescOpaque;
struct MatrixLayoutOpaque;
struct MatmulPreferenceOpaque;
using Handle = Context*;                          // cublasLtHandle_t
using MatmulDesc = MatmulDescOpaque*;             // cublasLtMatmulDesc_t
using MatrixLayout = MatrixLayoutOpaque*;         // cublasLtMatrixLayout_t
using MatmulPreference = MatmulPreferenceOpaque*; // cublasLtMatmulPreference_t

struct MatmulAlgo {  // cublasLtMatmulAlgo_t: returned by the heuristic, passed to Matmul
  uint64_t data[8];
};
struct HeuristicResult {  // cublasLtMatmulHeuristicResult_t
  MatmulAlgo algo;
  size_t workspace_size;
  Status state;
  float waves_count;
  int reserved[4];
};
static_assert(sizeof(MatmulAlgo) == 64 && sizeof(HeuristicResult) == 96,
              "cuBLASLt 13 ABI: cublasLtMatmulAlgo_t is 64 bytes, the heuristic result 96");

// The entry points ember uses; enum-typed parameters are int (same ABI), cudaStream_t is void*.
struct Api {
  std::string path;  // the library opened
  void* lib = nullptr;
  size_t version = 0;  // cublasLtGetVersion(): major * 10000 + minor * 100 + patch
  Status (*create)(Handle*) = nullptr;
  Status (*destroy)(Handle) = nullptr;
  size_t (*get_version)() = nullptr;
  const char* (*get_status_name)(Status) = nullptr;    // "CUBLAS_STATUS_NOT_SUPPORTED"
  const char* (*get_status_string)(Status) = nullptr;  // "the requested functionality is ..."
  Status (*matmul_desc_create)(MatmulDesc*, int compute_type, int scale_type) = nullptr;
  Status (*matmul_desc_set_attribute)(MatmulDesc, int attr, const void* buf,
                                      size_t bytes) = nullptr;
  Status (*matmul_desc_destroy)(MatmulDesc) = nullptr;
  Status (*matrix_layout_create)(MatrixLayout*, int type, uint64_t rows, uint64_t cols,
                                 int64_t ld) = nullptr;
  Status (*matrix_layout_set_attribute)(MatrixLayout, int attr, const void* buf,
                                        size_t bytes) = nullptr;
  Status (*matrix_layout_destroy)(MatrixLayout) = nullptr;
  Status (*matmul_preference_create)(MatmulPreference*) = nullptr;
  Status (*matmul_preference_set_attribute)(MatmulPreference, int attr, const void* buf,
                                            size_t bytes) = nullptr;
  Status (*matmul_preference_destroy)(MatmulPreference) = nullptr;
  Status (*matmul_algo_get_heuristic)(Handle, MatmulDesc, MatrixLayout a, MatrixLayout b,
                                      MatrixLayout c, MatrixLayout d, MatmulPreference,
                                      int requested, HeuristicResult* results,
                                      int* returned) = nullptr;
  Status (*matmul)(Handle, MatmulDesc, const void* alpha, const void* a, MatrixLayout a_desc,
                   const void* b, MatrixLayout b_desc, const void* beta, const void* c,
                   MatrixLayout c_desc, void* d, MatrixLayout d_desc, const MatmulAlgo* algo,
                   void* workspace, size_t workspace_bytes, void* stream) = nullptr;
};

}  // namespace lt

// ---- loading ----------------------------------------------------------------------------------

// The paths cublaslt_load tries, in order: explicit_path (Python passes the nvidia-cublas
// wheel's libcublasLt.so.13), $EMBER_CUBLASLT (env_value), the sonames "libcublasLt.so.13" and
// "libcublasLt.so" (the loader's search path), /usr/local/cuda/lib64/libcublasLt.so.13. Empty
// values are skipped.
std::vector<std::string> cublaslt_candidates(const std::string& explicit_path,
                                             const char* env_value);
// Opens the first candidate that loads, has every entry point and is cuBLASLt 13.x; false with
// a message naming every path tried (and why each failed) and how to install it.
bool cublaslt_open(const std::vector<std::string>& candidates, lt::Api* api, std::string* error);
// Process-wide: opens cuBLASLt once (thread-safe; a failure is retried by the next call). The
// CUDA backend calls it when a CUDA engine is made and reports `error` there.
bool cublaslt_load(const std::string& explicit_path, std::string* error);
// The loaded library (loading it now, from the default paths, if nobody has); an ember Error
// with cublaslt_load's message when it cannot be loaded.
const lt::Api& cublaslt_api();
// "CUBLAS_STATUS_NOT_SUPPORTED (the requested functionality is not supported)", for errors.
std::string cublaslt_status_str(const lt::Api& api, lt::Status s);
// The process's one cuBLASLt handle, created on first use. Never destroyed: destroying it at
// exit can run after the CUDA runtime has shut down.
lt::Handle cublaslt_handle();

// ---- matmul -----------------------------------------------------------------------------------

// Device pointers of one call (row-major, as in GemmPlan). c: Gemm's C for GemmC::Full, and the
// bias row for GemmC::Bias; otherwise cuBLASLt's C is d itself (read only when beta != 0).
// A and B are F32, or both already rounded to the precision's 16-bit type (ab_type
// lt_input_type(precision), same element strides): see cublaslt_matmul.
struct LtOperands {
  const void* a = nullptr;  // [batch?, m, k] or [k, m] when trans_a
  const void* b = nullptr;  // [batch?, k, n] or [n, k] when trans_b
  int ab_type = lt::kR32F;  // lt::kR32F, kR16F or kR16BF
  const float* c = nullptr;  // [m, n] (Full) or [n] (Bias)
  float* d = nullptr;        // [batch, m, n]
};

// The type A and B are rounded to before a call at this precision (kR32F: none): fp16 / bf16
// operands make cuBLASLt run its 16-bit tensor-core kernels. On the H200 the FAST_16F compute
// type on F32 operands ran a 4096^3 MatMul at 352 TFLOP/s, 46% of torch's fp16 GEMM: those
// kernels read fp32 and convert as they go.
int lt_input_type(Precision p);
// Whether rounding F32 A [m, k] and B [k, n] to 16 bits before the call pays for itself: the
// rounding moves 6 bytes per element of A and B (read 4, write 2), the 16-bit kernels save
// about half the GEMM time (2 m n k flops at the fp16 peak). With the H200's ~4 TB/s and ~700
// TFLOP/s, that is m n / (m + n) >= ~1000. Smaller calls (decode rows, narrow layers) keep F32
// operands and the FAST_16F / 16BF compute types.
bool lt_rounding_pays(int64_t m, int64_t n);

// Max workspace cuBLASLt may ask for (a Scratch of the step; deterministic runs always get it).
constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

// Enqueues D = alpha op(A) op(B) + beta C (+ bias) on `stream`, F32 C and D, computing in the
// precision of `options`: F32 operands with F32 (CUBLAS_COMPUTE_32F, no TF32) or, left F32 at
// F16 / BF16, the 32F_FAST_16F / 32F_FAST_16BF compute types; 16-bit operands (ops.ab_type)
// with CUBLAS_COMPUTE_32F (fp32 accumulation). The algorithm comes from a process-wide cache
// keyed by the call's layouts, operand type, epilogue, precision and pointer alignments. workspace(bytes) returns device memory
// that lives until the launch is done. Returns false where cuBLASLt has no algorithm for the
// call (the caller may try another path); throws an ember Error ("[what] ...") on a failed call.
// deterministic: no split-K, the algorithm the heuristic picks for a fixed m is used for every m
// (row results do not depend on how many rows run together), minimum alignments assumed.
bool cublaslt_matmul(const GemmPlan& plan, const LtOperands& ops, const DeviceOptions& options,
                     const std::function<void*(size_t)>& workspace, void* stream,
                     const char* what);

// Builds and frees the descriptors and search preference a call would use, with no GPU and no
// handle (host tests: the loaded library accepts every attribute ember sets, else an ember
// Error). Returns whether it took the batch-invariance flag (deterministic runs, 13.x > 13.0).
bool cublaslt_describe(const lt::Api& api, const GemmPlan& plan, const float* bias,
                       const DeviceOptions& options, int ab_type = lt::kR32F);

// The m the heuristic sees in deterministic runs: odd, so strides and leading dims that scale
// with m get the weakest alignment any m gives, and the algorithm fits every m.
constexpr int64_t kLtDeterministicM = 1023;

// ---- int8 matmul (QMatMul, ops_q8.cpp) --------------------------------------------------------

// Enqueues d [m, n_pad] int32 = a [m, k_pad] int8 @ w [n_pad, k_pad]^T int8 (all row-major)
// with CUBLAS_COMPUTE_32I: as column-major, D^T = op_T(W^T) @ A^T, the "TN" form IMMA needs.
// n_pad and k_pad must be multiples of 4 (ops_q8 pads to 16). Algorithms are cached per shape
// and alignment like cublaslt_matmul's. Returns false where cuBLASLt has no algorithm (the
// caller runs its own kernel); throws an ember Error ("[what] ...") on a failed call.
bool cublaslt_matmul_i8(int64_t m, int64_t n_pad, int64_t k_pad, const int8_t* a, const int8_t* w,
                        int32_t* d, const std::function<void*(size_t)>& workspace, void* stream,
                        const char* what);
// The descriptors and preference cublaslt_matmul_i8 would use, built and freed with no GPU (host
// tests: the loaded library accepts every attribute and type set); an ember Error otherwise.
void cublaslt_describe_i8(const lt::Api& api, int64_t m, int64_t n_pad, int64_t k_pad);

}  // namespace ember::cuda
