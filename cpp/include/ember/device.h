// Devices besides the host CPU. A Session built with SessionOptions::device places each node
// on that device when the device has a kernel for it (at the plan's types and shapes) and on
// the CPU otherwise; the planner adds explicit copy steps where a value crosses between the
// two, and plans each side's intermediates in its own arena. The core never names a device
// kind: a backend (ember._cuda, or the fake device below) registers itself by name.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/op.h"

namespace ember {

// precision="fp32" is exact; "fp16" / "bf16" let a device compute matmuls and attention on
// half-precision units (fp32 accumulation), keeping norms and softmax in fp32.
enum class Precision : uint8_t { F32, F16, BF16 };

struct DeviceOptions {
  Precision precision = Precision::F32;
  bool deterministic = false;  // results independent of batch size (fixed reduction orders)
};

// Load-time repacking of a constant input for a device kernel (host code): the tensor to
// upload in the constant's place, in the layout the kernel reads (int4 tiles for tensor cores,
// ...); an undefined Tensor keeps the constant as it is. Called once per constant per session.
using DevicePrepareFn = Tensor (*)(const Node& node, int input, const Tensor& host);

struct DeviceKernel {
  KernelFn fn = nullptr;  // runs with KernelCtx::device set; tensors hold device pointers
  const char* name = nullptr;
  DevicePrepareFn prepare = nullptr;  // optional, for the node's constant inputs
};

class Device {
 public:
  virtual ~Device() = default;
  virtual const std::string& name() const = 0;  // "cuda:0", "fake"
  // Device memory, 256-byte aligned; an ember Error (Input, "out of device memory ...") when
  // none is left. free takes what alloc returned.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) noexcept = 0;
  // Copies in the device's stream order. copy_to_host returns once the bytes are on the host.
  virtual void copy_to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_on_device(void* dst, const void* src, size_t bytes) = 0;
  // Waits until all work queued on the device has finished.
  virtual void synchronize() = 0;
  // A named range around each device step, for the device's profilers (NVTX on CUDA).
  virtual void range_push(const char* name) {}
  virtual void range_pop() {}
  // The device's own clock for profiling: timer_stop_ns waits for the work queued since
  // timer_start and returns its device time in ns, or -1 where the device keeps no clock (the
  // caller's host time around the step and a synchronize stands then).
  virtual void timer_start() {}
  virtual int64_t timer_stop_ns() {
    synchronize();
    return -1;
  }
  // The kernel that runs this node here at these types and shapes; fn null: the CPU runs it.
  virtual DeviceKernel find_kernel(const InferCtx& ctx, const DeviceOptions& options) const = 0;
  // Debug devices: the executor checks that every step reads and writes memory on its own
  // side (device steps: owns(p); CPU steps: !owns(p)).
  virtual bool checks_residency() const { return false; }
  virtual bool owns(const void* p) const { return false; }
};

// Registers a device under its name, replacing one of the same name.
void device_register(std::shared_ptr<Device> device);
// The registered device of that name, or nullptr.
std::shared_ptr<Device> device_find(const std::string& name);
std::vector<std::string> device_names();

// A second "device" for tests without a GPU: host memory from its own pool (so a CPU kernel
// that reads it, or a device kernel that reads host memory, is caught: checks_residency), and
// the CPU's kernels for the ops in `ops` only; every other node falls back to the CPU.
// Counts its copies (device_fake_stats) so tests see where the boundaries are. Constant
// inputs of `repack_ops` go through a DeviceKernel::prepare that copies them (counted in
// `prepared`), as a GPU kernel's repacking would.
std::shared_ptr<Device> device_fake_make(const std::string& name, const std::vector<OpType>& ops,
                                         const std::vector<OpType>& repack_ops = {});
struct FakeDeviceStats {
  int64_t copies_to_device = 0, copies_to_host = 0;
  int64_t bytes_to_device = 0, bytes_to_host = 0;
  int64_t live_allocations = 0;
  int64_t prepared = 0;  // constants repacked (by every fake device in the process)
};
FakeDeviceStats device_fake_stats(const Device& device);

}  // namespace ember
