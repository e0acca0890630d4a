// The capsule ember._core exports as `_device_api`: how a separately built backend module
// (ember._cuda) registers its devices in _core's registry. Both modules are built from one
// tree, so the C++ types match; `version` guards against a module from another build.
#pragma once
#include <memory>

#include "ember/device.h"

namespace ember::py {

constexpr const char* kDeviceApiName = "ember._core.device_api";
constexpr int kDeviceApiVersion = 1;

struct DeviceApi {
  int version;
  void (*register_device)(const std::shared_ptr<Device>& device);
};

}  // namespace ember::py
