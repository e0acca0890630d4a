// cuDNN at run time: dlopen and symbol lookup, a handle per device, and one convolution call
// (declarations and ABI notes in cudnn.h).
#include "cuda/src/cudnn.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>

#include "cuda/src/dl_open.h"
#include "ember/error.h"

namespace ember::cuda {

std::vector<std::string> cudnn_candidates(const std::string& explicit_path, const char* env_value) {
  std::vector<std::string> paths;
  if (!explicit_path.empty()) paths.push_back(explicit_path);
  if (env_value && *env_value) paths.emplace_back(env_value);
  for (const char* p : {"libcudnn.so.9", "libcudnn.so"}) paths.emplace_back(p);
  return paths;
}

namespace {

// Looks up every entry point; returns the first missing symbol's name, or nullptr.
const char* resolve(void* lib, dnn::Api* api) {
  return dl_resolve(lib, {
      {"cudnnGetVersion", (void**)&api->get_version},
      {"cudnnGetErrorString", (void**)&api->get_error_string},
      {"cudnnCreate", (void**)&api->create},
      {"cudnnSetStream", (void**)&api->set_stream},
      {"cudnnCreateTensorDescriptor", (void**)&api->create_tensor_desc},
      {"cudnnSetTensorNdDescriptor", (void**)&api->set_tensor_nd},
      {"cudnnDestroyTensorDescriptor", (void**)&api->destroy_tensor_desc},
      {"cudnnCreateFilterDescriptor", (void**)&api->create_filter_desc},
      {"cudnnSetFilterNdDescriptor", (void**)&api->set_filter_nd},
      {"cudnnDestroyFilterDescriptor", (void**)&api->destroy_filter_desc},
      {"cudnnCreateConvolutionDescriptor", (void**)&api->create_conv_desc},
      {"cudnnSetConvolutionNdDescriptor", (void**)&api->set_conv_nd},
      {"cudnnSetConvolutionGroupCount", (void**)&api->set_conv_group_count},
      {"cudnnSetConvolutionMathType", (void**)&api->set_conv_math_type},
      {"cudnnDestroyConvolutionDescriptor", (void**)&api->destroy_conv_desc},
      {"cudnnGetConvolutionNdForwardOutputDim", (void**)&api->get_output_dim},
      {"cudnnGetConvolutionForwardAlgorithm_v7", (void**)&api->get_algorithm_v7},
      {"cudnnGetConvolutionForwardWorkspaceSize", (void**)&api->get_workspace_size},
      {"cudnnConvolutionForward", (void**)&api->forward},
  });
}

}  // namespace

bool cudnn_open(const std::vector<std::string>& candidates, dnn::Api* api, std::string* error) {
  dnn::Api a;
  std::string path, tried;
  auto accept = [&](void* lib) -> std::string {
    a = dnn::Api();
    if (const char* missing = resolve(lib, &a)) return str_cat("no symbol ", missing);
    a.version = a.get_version();
    if (a.version / 10000 != 9) return str_cat("cuDNN version ", a.version, ", not 9.x");
    return "";
  };
  if (void* lib = dl_open_first(candidates, accept, &path, &tried)) {
    a.path = path;
    a.lib = lib;
    *api = a;
    return true;
  }
  if (error)
    *error = str_cat("[cudnn] no cuDNN 9 (Conv runs im2col + cuBLASLt instead); tried:", tried,
                     "\n`pip install nvidia-cudnn-cu13` or EMBER_CUDNN=<libcudnn.so.9> adds it");
  return false;
}

namespace {

std::mutex g_mutex;  // loading, the handles, and each handle's stream + launch
dnn::Api g_api;
std::atomic<int> g_state{0};  // 0: not tried, 1: loaded, -1: failed (not retried)

std::string status_str(const dnn::Api& api, dnn::Status s) {
  return str_cat(s, " (", api.get_error_string ? api.get_error_string(s) : "?", ")");
}

// The descriptors of one conv, destroyed with it.
struct Descs {
  const dnn::Api& api;
  dnn::TensorDesc x = nullptr, y = nullptr;
  dnn::FilterDesc w = nullptr;
  dnn::ConvDesc conv = nullptr;
  std::string why;  // empty: all set

  Descs(const dnn::Api& api_, const DnnConv& c) : api(api_) {
    auto ok = [&](dnn::Status s, const char* call) {
      if (s != dnn::kSuccess && why.empty()) why = str_cat(call, ": ", status_str(api, s));
      return why.empty();
    };
    const int xd[4] = {(int)c.N, (int)c.C, (int)c.H, (int)c.W};
    const int xs[4] = {(int)(c.C * c.H * c.W), (int)(c.H * c.W), (int)c.W, 1};
    const int yd[4] = {(int)c.N, (int)c.M, (int)c.OH, (int)c.OW};
    const int ys[4] = {(int)(c.M * c.OH * c.OW), (int)(c.OH * c.OW), (int)c.OW, 1};
    const int wd[4] = {(int)c.M, (int)(c.C / c.G), (int)c.kh, (int)c.kw};
    const int pad[2] = {(int)c.ph, (int)c.pw}, stride[2] = {(int)c.sh, (int)c.sw};
    const int dil[2] = {(int)c.dh, (int)c.dw};
    const int compute = dnn::kFloat;  // accumulation in float for every data type
    ok(api.create_tensor_desc(&x), "cudnnCreateTensorDescriptor") &&
        ok(api.set_tensor_nd(x, c.type, 4, xd, xs), "cudnnSetTensorNdDescriptor(x)") &&
        ok(api.create_tensor_desc(&y), "cudnnCreateTensorDescriptor") &&
        ok(api.set_tensor_nd(y, c.type, 4, yd, ys), "cudnnSetTensorNdDescriptor(y)") &&
        ok(api.create_filter_desc(&w), "cudnnCreateFilterDescriptor") &&
        ok(api.set_filter_nd(w, c.type, dnn::kNchw, 4, wd), "cudnnSetFilterNdDescriptor") &&
        ok(api.create_conv_desc(&conv), "cudnnCreateConvolutionDescriptor") &&
        ok(api.set_conv_nd(conv, 2, pad, stride, dil, dnn::kCrossCorrelation, compute),
           "cudnnSetConvolutionNdDescriptor") &&
        ok(api.set_conv_group_count(conv, (int)c.G), "cudnnSetConvolutionGroupCount") &&
        ok(api.set_conv_math_type(conv, c.math), "cudnnSetConvolutionMathType");
    if (!why.empty()) return;
    int out[4] = {};
    if (ok(api.get_output_dim(conv, x, w, 4, out), "cudnnGetConvolutionNdForwardOutputDim") &&
        (out[0] != c.N || out[1] != c.M || out[2] != c.OH || out[3] != c.OW))
      why = str_cat("output ", out[0], "x", out[1], "x", out[2], "x", out[3],
                    " (end pads other than the leading ones)");
  }
  ~Descs() {
    if (x) api.destroy_tensor_desc(x);
    if (y) api.destroy_tensor_desc(y);
    if (w) api.destroy_filter_desc(w);
    if (conv) api.destroy_conv_desc(conv);
  }
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
};

// The algorithm picked for a conv on a device: the heuristic query costs more than the launch.
using AlgoKey = std::array<int64_t, 20>;
struct Picked {
  int algo = -1;  // -1: none fits (the caller's own path)
  size_t bytes = 0;
};

AlgoKey key_of(const DnnConv& c, int device_ordinal, size_t max_workspace) {
  return {c.N,  c.C,  c.H,  c.W,  c.M,  c.G,  c.kh, c.kw, c.sh, c.sw,
          c.dh, c.dw, c.ph, c.pw, c.OH, c.OW, c.type, c.math, device_ordinal,
          (int64_t)max_workspace};
}

bool fits_int(const DnnConv& c) {
  const int64_t biggest = std::max({c.N * c.C * c.H * c.W, c.N * c.M * c.OH * c.OW,
                                    c.M * (c.G ? c.C / c.G : 0) * c.kh * c.kw});
  return biggest < (int64_t(1) << 31);
}

// The heuristic's first algorithm that fits the workspace (and, at fp32, runs FMA math only).
Picked pick(const dnn::Api& api, dnn::Handle h, const Descs& d, const DnnConv& c,
            size_t max_workspace, std::string* why) {
  dnn::AlgoPerf perf[8] = {};
  int n = 0;
  dnn::Status s = api.get_algorithm_v7(h, d.x, d.w, d.conv, d.y, 8, &n, perf);
  if (s != dnn::kSuccess) {
    *why = str_cat("cudnnGetConvolutionForwardAlgorithm_v7: ", status_str(api, s));
    return {};
  }
  for (int i = 0; i < n; i++) {
    if (perf[i].status != dnn::kSuccess || perf[i].memory > max_workspace) continue;
    // Tensor-core math only where asked for (no TF32 at fp32: math kFmaMath).
    if (c.math == dnn::kFmaMath && perf[i].math_type != dnn::kFmaMath &&
        perf[i].math_type != dnn::kDefaultMath)
      continue;
    size_t bytes = 0;
    if (api.get_workspace_size(h, d.x, d.w, d.conv, d.y, perf[i].algo, &bytes) != dnn::kSuccess ||
        bytes > max_workspace)
      continue;
    return {perf[i].algo, bytes};
  }
  *why = str_cat("no algorithm within ", max_workspace, " bytes of workspace (", n, " offered)");
  return {};
}

}  // namespace

bool cudnn_load(const std::string& explicit_path, std::string* error) {
  int state = g_state.load(std::memory_order_acquire);
  if (state != 0) return state > 0;
  std::lock_guard<std::mutex> lock(g_mutex);
  if ((state = g_state.load(std::memory_order_relaxed)) != 0) return state > 0;
  const bool ok =
      cudnn_open(cudnn_candidates(explicit_path, std::getenv("EMBER_CUDNN")), &g_api, error);
  g_state.store(ok ? 1 : -1, std::memory_order_release);
  return ok;
}

const dnn::Api* cudnn_api() {
  return g_state.load(std::memory_order_acquire) > 0 ? &g_api : nullptr;
}

struct CudnnConv::Impl {
  const dnn::Api& api;
  DnnConv c;
  std::optional<Descs> d;  // built where the dims fit cuDNN's ints
  std::string refused;

  Impl(const dnn::Api& api_, const DnnConv& c_) : api(api_), c(c_) {
    if (!fits_int(c)) {
      refused = "a dim past 2^31";
      return;
    }
    d.emplace(api, c);
    refused = d->why;
  }
};

CudnnConv::CudnnConv(const dnn::Api& api, const DnnConv& c) : impl_(new Impl(api, c)) {}
CudnnConv::~CudnnConv() = default;
const std::string& CudnnConv::refused() const { return impl_->refused; }

bool CudnnConv::forward(const void* x, const void* w, void* y, float beta, size_t max_workspace,
                        const std::function<void*(size_t)>& workspace, void* stream,
                        int device_ordinal, std::string* why) {
  if (!impl_->refused.empty()) {
    *why = impl_->refused;
    return false;
  }
  const dnn::Api& api = impl_->api;
  const DnnConv& c = impl_->c;
  const Descs& d = *impl_->d;
  std::lock_guard<std::mutex> lock(g_mutex);
  // One handle per device (a cuDNN handle belongs to the device current when it is made; the
  // caller has made this one current). Never destroyed, like cuBLASLt's.
  static std::map<int, dnn::Handle> handles;
  dnn::Handle& h = handles[device_ordinal];
  if (!h) {
    dnn::Status s = api.create(&h);
    if (s != dnn::kSuccess) {
      h = nullptr;
      *why = str_cat("cudnnCreate: ", status_str(api, s));
      return false;
    }
  }
  dnn::Status s = api.set_stream(h, stream);
  if (s != dnn::kSuccess) fail(ErrorKind::Internal, "[cudnn] cudnnSetStream: ", status_str(api, s));
  static std::map<AlgoKey, Picked> picked;
  const AlgoKey key = key_of(c, device_ordinal, max_workspace);
  auto it = picked.find(key);
  if (it == picked.end()) {
    if (picked.size() >= 4096) picked.clear();  // distinct convs; past it the cache starts over
    it = picked.emplace(key, pick(api, h, d, c, max_workspace, why)).first;
  }
  const Picked p = it->second;
  if (p.algo < 0) {
    if (why->empty()) *why = "no algorithm (cached)";
    return false;
  }
  void* ws = p.bytes ? workspace(p.bytes) : nullptr;
  const float alpha = 1.0f;
  s = api.forward(h, &alpha, d.x, x, d.w, w, d.conv, p.algo, ws, p.bytes, &beta, d.y, y);
  if (s != dnn::kSuccess)
    fail(ErrorKind::Internal, "[cudnn] cudnnConvolutionForward (algo ", p.algo, "): ",
         status_str(api, s));
  return true;
}

}  // namespace ember::cuda
