// The device registry, and the fake device: host memory from its own pool running the CPU's
// kernels for a chosen set of ops, so placement, copy steps and fallbacks are tested without
// a GPU (DESIGN.md, "Devices without a device").
#include "ember/device.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "runtime/registry.h"

namespace ember {
namespace {

std::mutex& registry_mu() {
  static std::mutex mu;
  return mu;
}

// Never destroyed: a device's destructor may need its driver, which is gone at exit.
std::map<std::string, std::shared_ptr<Device>>& registry() {
  static auto* devices = new std::map<std::string, std::shared_ptr<Device>>;
  return *devices;
}

std::atomic<int64_t> fake_prepared{0};

// The fake device's "repacking": a copy (same layout), counted.
Tensor fake_prepare(const Node& node, int input, const Tensor& host) {
  fake_prepared++;
  return host.clone();
}

class FakeDevice final : public Device {
 public:
  FakeDevice(std::string name, const std::vector<OpType>& ops, const std::vector<OpType>& repack)
      : name_(std::move(name)) {
    for (OpType op : ops) ops_.insert(op);
    for (OpType op : repack) repack_.insert(op);
  }
  ~FakeDevice() override {
    for (auto& [p, bytes] : live_) std::free(p);
  }

  const std::string& name() const override { return name_; }

  void* alloc(size_t bytes) override {
    void* p = std::aligned_alloc(256, std::max<size_t>((bytes + 255) / 256 * 256, 256));
    EMBER_CHECK(p, Input, "[", name_, "] out of device memory allocating ", bytes, " bytes");
    std::lock_guard<std::mutex> lock(mu_);
    live_[p] = bytes;
    stats_.live_allocations++;
    return p;
  }

  void free(void* p) noexcept override {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (live_.erase(p)) {
      std::free(p);
      stats_.live_allocations--;
    }
  }

  void copy_to_device(void* dst, const void* src, size_t bytes) override {
    EMBER_CHECK(owns(dst) && !owns(src), Internal, "[", name_, "] copy_to_device from device memory or to host memory");
    std::memcpy(dst, src, bytes);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.copies_to_device++;
    stats_.bytes_to_device += (int64_t)bytes;
  }

  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    EMBER_CHECK(owns(src) && !owns(dst), Internal, "[", name_, "] copy_to_host from host memory or to device memory");
    std::memcpy(dst, src, bytes);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.copies_to_host++;
    stats_.bytes_to_host += (int64_t)bytes;
  }

  void copy_on_device(void* dst, const void* src, size_t bytes) override {
    EMBER_CHECK(owns(dst) && owns(src), Internal, "[", name_, "] copy_on_device between host memory");
    std::memmove(dst, src, bytes);
  }

  void synchronize() override {}

  DeviceKernel find_kernel(const InferCtx& ctx, const DeviceOptions& options) const override {
    if (!ops_.count(ctx.node.op) || (op_def(ctx.node.op).flags & kOpDynamic)) return {};
    DevicePrepareFn prepare = repack_.count(ctx.node.op) ? fake_prepare : nullptr;
    if (const KernelEntry* e = cpu_kernel_find(ctx, cpu_isa())) return {e->fn, e->name, prepare};
    return {op_def(ctx.node.op).reference, "reference", prepare};
  }

  bool checks_residency() const override { return true; }

  bool owns(const void* p) const override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.upper_bound(const_cast<void*>(p));
    if (it == live_.begin()) return false;
    --it;
    const char* base = static_cast<const char*>(it->first);
    const char* q = static_cast<const char*>(p);
    return q >= base && q < base + std::max<size_t>(it->second, 1);
  }

  FakeDeviceStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    FakeDeviceStats s = stats_;
    s.prepared = fake_prepared.load();
    return s;
  }

 private:
  std::string name_;
  std::set<OpType> ops_, repack_;
  mutable std::mutex mu_;
  std::map<void*, size_t> live_;
  FakeDeviceStats stats_;
};

}  // namespace

void device_register(std::shared_ptr<Device> device) {
  EMBER_CHECK(device && !device->name().empty() && device->name() != "cpu", Input,
              "[device] a device needs a name other than 'cpu'");
  std::lock_guard<std::mutex> lock(registry_mu());
  registry()[device->name()] = std::move(device);
}

std::shared_ptr<Device> device_find(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mu());
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : it->second;
}

std::vector<std::string> device_names() {
  std::lock_guard<std::mutex> lock(registry_mu());
  std::vector<std::string> names;
  for (const auto& [name, d] : registry()) names.push_back(name);
  return names;
}

std::shared_ptr<Device> device_fake_make(const std::string& name, const std::vector<OpType>& ops,
                                         const std::vector<OpType>& repack_ops) {
  return std::make_shared<FakeDevice>(name, ops, repack_ops);
}

FakeDeviceStats device_fake_stats(const Device& device) {
  const auto* fake = dynamic_cast<const FakeDevice*>(&device);
  EMBER_CHECK(fake, Input, "[device] '", device.name(), "' is not a fake device");
  return fake->stats();
}

}  // namespace ember
