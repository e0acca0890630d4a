// cuBLASLt at run time: dlopen and symbol lookup, the process's handle, and one matmul call
// with its heuristic cache (declarations and the ABI notes in cublaslt.h).
#include "cuda/src/cublaslt.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>

#include "cuda/src/dl_open.h"
#include "ember/error.h"

namespace ember::cuda {

// ---- loading ----------------------------------------------------------------------------------

std::vector<std::string> cublaslt_candidates(const std::string& explicit_path,
                                             const char* env_value) {
  std::vector<std::string> paths;
  if (!explicit_path.empty()) paths.push_back(explicit_path);
  if (env_value && *env_value) paths.emplace_back(env_value);
  for (const char* p :
       {"libcublasLt.so.13", "libcublasLt.so", "/usr/local/cuda/lib64/libcublasLt.so.13"})
    paths.emplace_back(p);
  return paths;
}

namespace {

// Looks up every entry point; returns the first missing symbol's name, or nullptr.
const char* resolve(void* lib, lt::Api* api) {
  return dl_resolve(lib, {
      {"cublasLtCreate", (void**)&api->create},
      {"cublasLtDestroy", (void**)&api->destroy},
      {"cublasLtGetVersion", (void**)&api->get_version},
      {"cublasLtGetStatusName", (void**)&api->get_status_name},
      {"cublasLtGetStatusString", (void**)&api->get_status_string},
      {"cublasLtMatmulDescCreate", (void**)&api->matmul_desc_create},
      {"cublasLtMatmulDescSetAttribute", (void**)&api->matmul_desc_set_attribute},
      {"cublasLtMatmulDescDestroy", (void**)&api->matmul_desc_destroy},
      {"cublasLtMatrixLayoutCreate", (void**)&api->matrix_layout_create},
      {"cublasLtMatrixLayoutSetAttribute", (void**)&api->matrix_layout_set_attribute},
      {"cublasLtMatrixLayoutDestroy", (void**)&api->matrix_layout_destroy},
      {"cublasLtMatmulPreferenceCreate", (void**)&api->matmul_preference_create},
      {"cublasLtMatmulPreferenceSetAttribute", (void**)&api->matmul_preference_set_attribute},
      {"cublasLtMatmulPreferenceDestroy", (void**)&api->matmul_preference_destroy},
      {"cublasLtMatmulAlgoGetHeuristic", (void**)&api->matmul_algo_get_heuristic},
      {"cublasLtMatmul", (void**)&api->matmul},
  });
}

}  // namespace

bool cublaslt_open(const std::vector<std::string>& candidates, lt::Api* api, std::string* error) {
  lt::Api a;
  std::string path, tried;
  auto accept = [&](void* lib) -> std::string {
    a = lt::Api();
    if (const char* missing = resolve(lib, &a)) return str_cat("no symbol ", missing);
    a.version = a.get_version();
    if (a.version / 10000 != 13) return str_cat("cuBLASLt version ", a.version, ", not 13.x");
    return "";
  };
  if (void* lib = dl_open_first(candidates, accept, &path, &tried)) {
    a.path = path;
    a.lib = lib;
    *api = a;
    return true;
  }
  if (error)
    *error = str_cat("[cublaslt] cannot load cuBLASLt 13, which the CUDA backend's MatMul and Gemm "
                     "need; tried:", tried, "\ninstall it with `pip install nvidia-cublas`, or set "
                     "EMBER_CUBLASLT to the path of a libcublasLt.so.13");
  return false;
}

namespace {

std::mutex g_load_mutex;
lt::Api g_api;  // written once, under g_load_mutex, before g_loaded is set
std::atomic<bool> g_loaded{false};

}  // namespace

bool cublaslt_load(const std::string& explicit_path, std::string* error) {
  if (g_loaded.load(std::memory_order_acquire)) return true;  // every matmul comes by here
  std::lock_guard<std::mutex> lock(g_load_mutex);
  if (g_loaded.load(std::memory_order_relaxed)) return true;
  bool ok = cublaslt_open(cublaslt_candidates(explicit_path, std::getenv("EMBER_CUBLASLT")), &g_api,
                          error);
  g_loaded.store(ok, std::memory_order_release);
  return ok;
}

const lt::Api& cublaslt_api() {
  std::string error;
  if (!cublaslt_load("", &error)) fail(ErrorKind::Input, error);
  return g_api;
}

std::string cublaslt_status_str(const lt::Api& api, lt::Status s) {
  return str_cat(api.get_status_name(s), " (", api.get_status_string(s), ")");
}

lt::Handle cublaslt_handle() {
  static std::mutex mutex;
  static lt::Handle handle = nullptr;
  const lt::Api& api = cublaslt_api();
  std::lock_guard<std::mutex> lock(mutex);
  if (!handle) {
    lt::Status s = api.create(&handle);
    if (s != lt::kSuccess) {
      handle = nullptr;
      fail(ErrorKind::Internal, "[cublaslt] cublasLtCreate failed: ", cublaslt_status_str(api, s));
    }
  }
  return handle;
}

// ---- matmul -----------------------------------------------------------------------------------

namespace {

void check(const lt::Api& api, lt::Status s, const char* what, const char* call) {
  if (s != lt::kSuccess)
    fail(ErrorKind::Internal, "[", what, "] ", call, " failed: ", cublaslt_status_str(api, s));
}

// A call's matmul descriptor and A, B, D layouts, destroyed with it (C shares D's layout:
// cuBLASLt's in-place rule when C is D). Float and int8 calls fill them their own way.
struct DescHandles {
  const lt::Api& api;
  lt::MatmulDesc desc = nullptr;
  lt::MatrixLayout a = nullptr, b = nullptr, d = nullptr;

  explicit DescHandles(const lt::Api& api_) : api(api_) {}
  ~DescHandles() { release(); }
  DescHandles(const DescHandles&) = delete;
  DescHandles& operator=(const DescHandles&) = delete;

  void release() {
    if (a) api.matrix_layout_destroy(a);
    if (b) api.matrix_layout_destroy(b);
    if (d) api.matrix_layout_destroy(d);
    if (desc) api.matmul_desc_destroy(desc);
    a = b = d = nullptr;
    desc = nullptr;
  }
  void set_desc(int attr, const void* v, size_t n, const char* what) {
    check(api, api.matmul_desc_set_attribute(desc, attr, v, n), what,
          "cublasLtMatmulDescSetAttribute");
  }
  lt::MatrixLayout layout(int type, int64_t rows, int64_t cols, int64_t ld, const char* what) {
    lt::MatrixLayout l = nullptr;
    check(api, api.matrix_layout_create(&l, type, (uint64_t)rows, (uint64_t)cols, ld), what,
          "cublasLtMatrixLayoutCreate");
    return l;
  }
};

// The descriptors of one float call.
struct Descs : DescHandles {
  bool batch_invariant = false;  // the library took the batch-invariance flag

  Descs(const lt::Api& api_, const LtGemmArgs& g, int compute, int ab_type, const GemmPlan& plan,
        const float* bias, bool deterministic, const char* what)
      : DescHandles(api_) {
    try {
      check(api, api.matmul_desc_create(&desc, compute, lt::kR32F), what,
            "cublasLtMatmulDescCreate");
      int32_t ta = g.trans_a ? lt::kOpT : lt::kOpN, tb = g.trans_b ? lt::kOpT : lt::kOpN;
      set_desc(lt::kDescTransA, &ta, sizeof(ta), what);
      set_desc(lt::kDescTransB, &tb, sizeof(tb), what);
      if (plan.c == GemmC::Bias) {
        uint32_t epilogue = lt::kEpilogueBias;
        set_desc(lt::kDescEpilogue, &epilogue, sizeof(epilogue), what);
        set_desc(lt::kDescBiasPointer, &bias, sizeof(bias), what);
      }
      if (deterministic) {
        // Batch-invariant kernels where the library has them (13.x after 13.0); older ones
        // refuse the attribute, and the fixed algorithm with no split-K is what remains.
        int32_t flags = lt::kBatchInvarianceAlign4B;
        batch_invariant = api.matmul_desc_set_attribute(desc, lt::kDescBatchInvarianceFlags, &flags,
                                                        sizeof(flags)) == lt::kSuccess;
      }
      a = layout(ab_type, g.a_rows, g.a_cols, g.lda, g.batch, g.stride_a, what);
      b = layout(ab_type, g.b_rows, g.b_cols, g.ldb, g.batch, g.stride_b, what);
      d = layout(lt::kR32F, g.d_rows, g.d_cols, g.ldd, g.batch, g.stride_d, what);
    } catch (...) {
      release();
      throw;
    }
  }
  // A float layout (F32, F16 or BF16), strided-batched when batch > 1.
  lt::MatrixLayout layout(int type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                          int64_t stride, const char* what) {
    lt::MatrixLayout l = DescHandles::layout(type, rows, cols, ld, what);
    if (batch > 1) {
      int32_t count = (int32_t)batch;
      lt::Status s =
          api.matrix_layout_set_attribute(l, lt::kLayoutBatchCount, &count, sizeof(count));
      if (s == lt::kSuccess)
        s = api.matrix_layout_set_attribute(l, lt::kLayoutStridedBatchOffset, &stride,
                                            sizeof(stride));
      if (s != lt::kSuccess) {
        api.matrix_layout_destroy(l);
        check(api, s, what, "cublasLtMatrixLayoutSetAttribute");
      }
    }
    return l;
  }
};

// Alignment (bytes, up to 256) of a pointer and every batch's offset from it: the heuristic
// only offers kernels whose vector loads fit it.
uint32_t alignment(const void* p, int64_t batch, int64_t stride, size_t elem = sizeof(float)) {
  uintptr_t bits = (uintptr_t)p;
  if (batch > 1 && stride != 0) bits |= (uintptr_t)stride * elem;
  bits |= 256;
  return (uint32_t)(bits & (~bits + 1));
}

struct CachedAlgo {
  bool found = false;
  lt::MatmulAlgo algo{};
  size_t workspace = 0;
};
using AlgoKey = std::array<int64_t, 24>;

std::mutex g_cache_mutex;
std::map<AlgoKey, CachedAlgo> g_cache;
constexpr size_t kCacheMax = 4096;  // distinct shapes; past it the cache starts over

// The heuristic's search preference: the workspace limit, the alignments the operands have,
// and (deterministic runs) no split-K, so each element has one summation order.
struct Pref {
  const lt::Api& api;
  lt::MatmulPreference pref = nullptr;

  Pref(const lt::Api& api_, const std::array<uint32_t, 4>& align, bool deterministic,
       const char* what)
      : api(api_) {
    check(api, api.matmul_preference_create(&pref), what, "cublasLtMatmulPreferenceCreate");
    uint64_t ws = kLtWorkspaceBytes;
    lt::Status s =
        api.matmul_preference_set_attribute(pref, lt::kPrefMaxWorkspaceBytes, &ws, sizeof(ws));
    if (deterministic && s == lt::kSuccess) {
      uint32_t none = lt::kReductionSchemeNone;
      s = api.matmul_preference_set_attribute(pref, lt::kPrefReductionSchemeMask, &none,
                                              sizeof(none));
    }
    for (int i = 0; i < 4 && s == lt::kSuccess; i++)  // A, B, C, D
      s = api.matmul_preference_set_attribute(pref, lt::kPrefMinAlignmentA + i, &align[i],
                                              sizeof(align[i]));
    if (s != lt::kSuccess) {
      api.matmul_preference_destroy(pref);
      check(api, s, what, "cublasLtMatmulPreferenceSetAttribute");
    }
  }
  ~Pref() { api.matmul_preference_destroy(pref); }
  Pref(const Pref&) = delete;
  Pref& operator=(const Pref&) = delete;
};

// One heuristic query: the best algorithm within the workspace limit and alignments. Descs
// or DescsI8: any holder of the matmul descriptor and the A, B, D layouts.
template <class D>
CachedAlgo query(const lt::Api& api, const D& ds, const std::array<uint32_t, 4>& align,
                 bool deterministic, const char* what) {
  Pref pref(api, align, deterministic, what);
  lt::HeuristicResult r{};
  int returned = 0;
  lt::Status s = api.matmul_algo_get_heuristic(cublaslt_handle(), ds.desc, ds.a, ds.b, ds.d, ds.d,
                                               pref.pref, 1, &r, &returned);
  // NOT_SUPPORTED: no heuristic for this configuration; the caller may try another path.
  if (s != lt::kSuccess && s != lt::kNotSupported)
    check(api, s, what, "cublasLtMatmulAlgoGetHeuristic");
  CachedAlgo out;
  if (s == lt::kSuccess && returned > 0 && r.state == lt::kSuccess) {
    out.found = true;
    out.algo = r.algo;
    out.workspace = r.workspace_size;
  }
  return out;
}

AlgoKey key_of(const LtGemmArgs& g, const GemmPlan& p, int compute, int ab_type,
               bool deterministic, const std::array<uint32_t, 4>& align, uint32_t bias_align) {
  return {g.trans_a, g.trans_b, g.a_rows, g.a_cols, g.lda, g.b_rows, g.b_cols, g.ldb,
          g.d_rows, g.d_cols, g.ldd, g.batch, g.stride_a, g.stride_b, g.stride_d,
          (int64_t)p.c, compute, ab_type, deterministic, align[0], align[1], align[2],
          align[3], bias_align};
}

CachedAlgo cached(const AlgoKey& key, const std::function<CachedAlgo()>& make) {
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = g_cache.find(key);
    if (it != g_cache.end()) return it->second;
  }
  CachedAlgo a = make();  // outside the lock: a heuristic query takes a while
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  if (g_cache.size() >= kCacheMax) g_cache.clear();
  g_cache.emplace(key, a);
  return a;
}

// 16-bit operands accumulate in fp32 (COMPUTE_32F); F32 ones compute at the precision.
int compute_type(Precision p, int ab_type) {
  if (ab_type != lt::kR32F) return lt::kCompute32F;
  switch (p) {
    case Precision::F16: return lt::kCompute32FFast16F;
    case Precision::BF16: return lt::kCompute32FFast16BF;
    default: return lt::kCompute32F;  // plain FP32 FMA: cuBLASLt uses TF32 only when asked
  }
}

size_t type_bytes(int ab_type) { return ab_type == lt::kR32F ? 4 : 2; }

}  // namespace

int lt_input_type(Precision p) {
  switch (p) {
    case Precision::F16: return lt::kR16F;
    case Precision::BF16: return lt::kR16BF;
    default: return lt::kR32F;
  }
}

bool lt_rounding_pays(int64_t m, int64_t n) {
  return m > 0 && n > 0 && (double)m * (double)n / (double)(m + n) >= 1000.0;
}

bool cublaslt_describe(const lt::Api& api, const GemmPlan& plan, const float* bias,
                       const DeviceOptions& options, int ab_type) {
  Descs ds(api, gemm_lt_args(plan), compute_type(options.precision, ab_type), ab_type, plan,
           bias, options.deterministic, "cublaslt");
  Pref pref(api, {16, 16, 16, 16}, options.deterministic, "cublaslt");
  return ds.batch_invariant;
}

bool cublaslt_matmul(const GemmPlan& plan, const LtOperands& ops, const DeviceOptions& options,
                     const std::function<void*(size_t)>& workspace, void* stream,
                     const char* what) {
  const lt::Api& api = cublaslt_api();
  lt::Handle handle = cublaslt_handle();
  bool det = options.deterministic;
  const int ab = ops.ab_type;
  int compute = compute_type(options.precision, ab);
  const float* c = plan.c == GemmC::Full ? ops.c : ops.d;
  const float* bias = plan.c == GemmC::Bias ? ops.c : nullptr;
  LtGemmArgs g = gemm_lt_args(plan);
  Descs run(api, g, compute, ab, plan, bias, det, what);

  // The actual alignments; deterministic runs assume one element (any tensor: 4 bytes, 2 for
  // 16-bit operands) so the one algorithm stays valid wherever the arena puts the operands.
  const auto elem = (uint32_t)type_bytes(ab);
  std::array<uint32_t, 4> align = {elem, elem, 4, 4};
  if (!det)
    align = {alignment(ops.b, g.batch, g.stride_a, type_bytes(ab)),
             alignment(ops.a, g.batch, g.stride_b, type_bytes(ab)),
             alignment(c, g.batch, g.stride_d), alignment(ops.d, g.batch, g.stride_d)};
  uint32_t bias_align = bias ? alignment(bias, 1, 0) : 0;
  auto exact = [&] { return query(api, run, align, det, what); };
  CachedAlgo algo;
  if (det) {
    GemmPlan canon = gemm_plan_with_m(plan, kLtDeterministicM);
    LtGemmArgs cg = gemm_lt_args(canon);
    algo = cached(key_of(cg, canon, compute, ab, true, align, 0), [&] {
      Descs q(api, cg, compute, ab, canon, bias, true, what);
      return query(api, q, align, true, what);
    });
  } else {
    algo = cached(key_of(g, plan, compute, ab, false, align, bias_align), exact);
  }
  if (!algo.found) return false;

  float alpha = g.alpha, beta = g.beta;
  size_t ws_bytes = det ? kLtWorkspaceBytes : algo.workspace;
  void* ws = ws_bytes ? workspace(ws_bytes) : nullptr;
  lt::Status s = api.matmul(handle, run.desc, &alpha, ops.b, run.a, ops.a, run.b, &beta, c, run.d,
                            ops.d, run.d, &algo.algo, ws, ws_bytes, stream);
  if (s != lt::kSuccess && det) {
    // NOTE: the fixed-m algorithm did not fit this m; this call runs with the heuristic's pick
    // for its own m (still no split-K), re-queried each time (the cache holds the fixed one).
    algo = exact();
    if (!algo.found) return false;
    s = api.matmul(handle, run.desc, &alpha, ops.b, run.a, ops.a, run.b, &beta, c, run.d, ops.d,
                   run.d, &algo.algo, ws, ws_bytes, stream);
  }
  if (s != lt::kSuccess)
    fail(ErrorKind::Internal, "[", what, "] cublasLtMatmul failed: ", cublaslt_status_str(api, s),
         " (m=", plan.m, ", n=", plan.n, ", k=", plan.k, ", batch=", plan.batch, ")");
  return true;
}

// ---- int8 matmul (QMatMul) ----------------------------------------------------------------------

namespace {

// The descriptors of one int8 call: TN, int32 scale and output, no epilogue.
struct DescsI8 : DescHandles {
  DescsI8(const lt::Api& api_, int64_t m, int64_t n_pad, int64_t k_pad, const char* what)
      : DescHandles(api_) {
    try {
      check(api, api.matmul_desc_create(&desc, lt::kCompute32I, lt::kR32I), what,
            "cublasLtMatmulDescCreate");
      int32_t ta = lt::kOpT, tb = lt::kOpN;
      set_desc(lt::kDescTransA, &ta, sizeof(ta), what);
      set_desc(lt::kDescTransB, &tb, sizeof(tb), what);
      a = layout(lt::kR8I, k_pad, n_pad, k_pad, what);  // W [n_pad, k_pad] is col-major [k_pad, n_pad]
      b = layout(lt::kR8I, k_pad, m, k_pad, what);      // codes [m, k_pad]
      d = layout(lt::kR32I, n_pad, m, n_pad, what);     // sums [m, n_pad]
    } catch (...) {
      release();
      throw;
    }
  }
};

constexpr int64_t kI8KeyTag = -8;  // first key slot: never a float call's trans_a (0 or 1)

}  // namespace

void cublaslt_describe_i8(const lt::Api& api, int64_t m, int64_t n_pad, int64_t k_pad) {
  DescsI8 ds(api, m, n_pad, k_pad, "cublaslt");
  Pref pref(api, {16, 16, 16, 16}, false, "cublaslt");
}

bool cublaslt_matmul_i8(int64_t m, int64_t n_pad, int64_t k_pad, const int8_t* a, const int8_t* w,
                        int32_t* d, const std::function<void*(size_t)>& workspace, void* stream,
                        const char* what) {
  const lt::Api& api = cublaslt_api();
  lt::Handle handle = cublaslt_handle();
  DescsI8 run(api, m, n_pad, k_pad, what);
  // Integer sums are exact in any order: split-K and per-m algorithms change no bits.
  std::array<uint32_t, 4> align = {alignment(w, 1, 0), alignment(a, 1, 0), alignment(d, 1, 0),
                                   alignment(d, 1, 0)};
  AlgoKey key{kI8KeyTag, m, n_pad, k_pad, align[0], align[1], align[2]};
  CachedAlgo algo = cached(key, [&] { return query(api, run, align, false, what); });
  if (!algo.found) return false;
  int32_t alpha = 1, beta = 0;
  void* ws = algo.workspace ? workspace(algo.workspace) : nullptr;
  lt::Status s = api.matmul(handle, run.desc, &alpha, w, run.a, a, run.b, &beta, d, run.d, d,
                            run.d, &algo.algo, ws, algo.workspace, stream);
  if (s != lt::kSuccess)
    fail(ErrorKind::Internal, "[", what, "] int8 cublasLtMatmul failed: ",
         cublaslt_status_str(api, s), " (m=", m, ", n_pad=", n_pad, ", k_pad=", k_pad, ")");
  return true;
}

}  // namespace ember::cuda
