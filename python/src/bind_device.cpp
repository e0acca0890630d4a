// Devices: the registry (ember/device.h), the fake device for tests, and the capsule through
// which a separately built backend module (ember._cuda) registers its devices here.
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "convert.h"
#include "device_api.h"
#include "ember/device.h"

namespace ember::py {

namespace {

void register_from_module(const std::shared_ptr<Device>& device) { device_register(device); }

const DeviceApi kDeviceApi{kDeviceApiVersion, register_from_module};

}  // namespace

void init_device(nb::module_& m) {
  m.attr("_device_api") = nb::capsule(&kDeviceApi, kDeviceApiName);
  m.def("device_names", &device_names, "registered devices besides the CPU");
  m.def(
      "register_fake_device",
      [](const std::string& name, const std::vector<std::string>& ops,
         const std::vector<std::string>& repack_ops) {
        auto types = [](const std::vector<std::string>& names) {
          std::vector<OpType> out;
          for (const std::string& op : names) {
            OpType t;
            EMBER_CHECK(op_from_name(op, &t), Input, "[device] unknown op '", op, "'");
            out.push_back(t);
          }
          return out;
        };
        device_register(device_fake_make(name, types(ops), types(repack_ops)));
      },
      nb::arg("name"), nb::arg("ops"), nb::arg("repack_ops") = std::vector<std::string>{},
      "a test device: host memory in its own pool, the CPU's kernels for `ops` only; constant "
      "inputs of `repack_ops` are repacked (copied, counted) at load");
  m.def("fake_device_stats", [](const std::string& name) {
    std::shared_ptr<Device> d = device_find(name);
    EMBER_CHECK(d, Input, "[device] no device '", name, "'");
    FakeDeviceStats s = device_fake_stats(*d);
    nb::dict out;
    out["copies_to_device"] = s.copies_to_device;
    out["copies_to_host"] = s.copies_to_host;
    out["bytes_to_device"] = s.bytes_to_device;
    out["bytes_to_host"] = s.bytes_to_host;
    out["live_allocations"] = s.live_allocations;
    out["prepared"] = s.prepared;
    return out;
  });
}

}  // namespace ember::py
