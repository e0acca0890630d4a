// ember._cuda: the CUDA backend as a separately built, lazily imported module. It registers
// one CudaDevice per GPU into ember._core's device registry through the capsule _core
// exports; everything else goes through Engine(device="cuda").
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <cuda_runtime.h>

#include "cuda/src/backend.h"
#include "cuda/src/cublaslt.h"
#include "cuda/src/cudnn.h"
#include "python/src/device_api.h"
#include "python/src/errors.h"

namespace nb = nanobind;
using namespace ember;
using namespace ember::cuda;

namespace {

std::shared_ptr<CudaDevice> device_at(int ordinal) {
  static std::mutex mu;
  static auto* devices = new std::vector<std::shared_ptr<CudaDevice>>;  // never destroyed
  std::lock_guard<std::mutex> lock(mu);
  int n = cuda_device_count(nullptr);
  EMBER_CHECK(ordinal >= 0 && ordinal < n, Input, "[cuda] no device cuda:", ordinal, " (",
              n, " present)");
  if ((int)devices->size() < n) devices->resize(n);
  if (!(*devices)[ordinal]) (*devices)[ordinal] = std::make_shared<CudaDevice>(ordinal);
  return (*devices)[ordinal];
}

}  // namespace

NB_MODULE(_cuda, m) {
  m.doc() = "ember's CUDA backend";
  ember::py::register_error_translator();
  m.def("device_count", [] { return cuda_device_count(nullptr); });
  m.def("unavailable_reason", [] {
    std::string why;
    return cuda_device_count(&why) > 0 ? std::string() : why;
  }, "why there is no usable device ('' when there is one)");
  m.def("device_name", [](int ordinal) {
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, ordinal), "cudaGetDeviceProperties");
    return std::string(prop.name);
  });
  m.def("compute_capability", [](int ordinal) {
    int major = 0, minor = 0;
    cuda_check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ordinal), "attribute");
    cuda_check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ordinal), "attribute");
    return nb::make_tuple(major, minor);
  });
  m.def("load_cublaslt", [](const std::string& path) {
    std::string error;
    bool ok = cublaslt_load(path, &error);
    return nb::make_tuple(ok, error);
  }, nb::arg("path") = "", "opens cuBLASLt -> (ok, error naming every path tried)");
  m.def("load_cudnn", [](const std::string& path) {
    std::string error;
    bool ok = cudnn_load(path, &error);
    const dnn::Api* api = cudnn_api();
    return nb::make_tuple(ok, error, api ? api->path : std::string(), api ? (int64_t)api->version : 0);
  }, nb::arg("path") = "",
     "opens cuDNN 9 for Conv (optional; tried once) -> (ok, error, path, version)");
  m.def("register_device", [](nb::capsule api, int ordinal) {
    EMBER_CHECK(std::string(api.name()) == ember::py::kDeviceApiName, Internal,
                "[cuda] not ember._core's device capsule");
    const auto* table = static_cast<const ember::py::DeviceApi*>(api.data());
    EMBER_CHECK(table->version == ember::py::kDeviceApiVersion, Internal,
                "[cuda] ember._core and ember._cuda come from different builds");
    std::shared_ptr<CudaDevice> dev = device_at(ordinal);
    table->register_device(dev);
    return dev->name();
  }, nb::arg("api"), nb::arg("ordinal"));
  m.def("allocator_stats", [](int ordinal) {
    AllocatorStats s = device_at(ordinal)->allocator_stats();
    nb::dict d;
    d["in_use"] = s.in_use;
    d["cached"] = s.cached;
    d["peak"] = s.peak;
    d["raw_allocs"] = s.raw_allocs;
    d["hits"] = s.hits;
    return d;
  });
}
