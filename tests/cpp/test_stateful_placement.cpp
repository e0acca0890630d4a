// Stateful nodes on a second device (runtime/plan.cpp, stateful_on_device): PagedAttention
// writes its KV-cache feeds in place, so it must run where they are bound. Caches on the host
// keep it on the CPU (listed with the fallbacks) even where the device has a kernel; caches in
// device memory run it there; caches split across sides, or in device memory on a device
// without the kernel, are errors: elsewhere its writes would land in a copy and be lost.
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/device.h"
#include "ember/error.h"
#include "ember/session.h"

using namespace ember;

namespace {

constexpr int64_t kT = 3, kHeads = 2, kDim = 8, kBlocks = 2, kBlockSize = 4;
const char* kInputs[] = {
    "q", "k", "v", "k_cache", "v_cache", "slot_mapping", "query_start", "seq_lens", "block_tables"};

Graph paged_graph() {
  Graph g;
  Node n;
  n.op = OpType::PagedAttention;
  n.name = "attn";
  for (const char* name : kInputs) {
    const int id = g.add_value(name);
    g.inputs.push_back(id);
    n.inputs.push_back(id);
  }
  const int y = g.add_value("y");
  n.outputs = {y};
  n.attrs.set("num_heads", kHeads);
  n.attrs.set("num_kv_heads", kHeads);
  n.attrs.set("head_dim", kDim);
  g.nodes = {n};
  g.outputs = {y};
  return g;
}

// One sequence of kT new tokens in block 1 (slots 4..6) of a zeroed cache.
NamedTensors paged_feeds(std::mt19937& gen) {
  std::normal_distribution<float> dist;
  auto random = [&](const Shape& s) {
    Tensor t = Tensor::empty(DType::F32, s);
    for (int64_t i = 0; i < t.numel(); i++) t.ptr<float>()[i] = dist(gen);
    return t;
  };
  const Shape cache{kBlocks, kBlockSize, kHeads, kDim};
  Tensor slots = Tensor::empty(DType::I64, {kT}), start = Tensor::empty(DType::I32, {2});
  Tensor lens = Tensor::empty(DType::I32, {1}), tables = Tensor::empty(DType::I32, {1, 1});
  for (int64_t i = 0; i < kT; i++) slots.ptr<int64_t>()[i] = kBlockSize + i;
  start.ptr<int32_t>()[0] = 0;
  start.ptr<int32_t>()[1] = (int32_t)kT;
  lens.ptr<int32_t>()[0] = (int32_t)kT;
  tables.ptr<int32_t>()[0] = 1;
  return {{"q", random({kT, kHeads * kDim})},
          {"k", random({kT, kHeads * kDim})},
          {"v", random({kT, kHeads * kDim})},
          {"k_cache", Tensor::zeros(DType::F32, cache)},
          {"v_cache", Tensor::zeros(DType::F32, cache)},
          {"slot_mapping", slots},
          {"query_start", start},
          {"seq_lens", lens},
          {"block_tables", tables}};
}

// The k rows the node must have written: block 1, offsets 0..kT-1 of the cache.
bool cache_holds_k(const Tensor& k_cache, const Tensor& k) {
  const float* c = k_cache.ptr<float>() + kBlockSize * kHeads * kDim;
  for (int64_t i = 0; i < k.numel(); i++)
    if (c[i] != k.ptr<float>()[i]) return false;
  return true;
}

SessionOptions on(const std::string& device) {
  SessionOptions o;
  o.device = device;
  return o;
}

}  // namespace

TEST_CASE("stateful placement: caches on the host keep PagedAttention on the CPU") {
  device_register(device_fake_make("fake-paged", {OpType::PagedAttention}));
  std::mt19937 gen(3);
  NamedTensors feeds = paged_feeds(gen);
  Session cpu(paged_graph(), SessionOptions{});
  NamedTensors want_feeds = paged_feeds(gen = std::mt19937(3));
  const Tensor want = cpu.run(want_feeds)[0].second;

  Session s(paged_graph(), on("fake-paged"));
  const Tensor y = s.run(feeds)[0].second;
  CHECK(cache_holds_k(feeds[3].second, feeds[1].second));  // written in the caller's cache
  CHECK(s.device_fallbacks() ==
        std::vector<std::pair<std::string, std::string>>{{"attn", "PagedAttention"}});
  REQUIRE(y.numel() == want.numel());
  for (int64_t i = 0; i < y.numel(); i++) CHECK(y.ptr<float>()[i] == want.ptr<float>()[i]);
}

TEST_CASE("stateful placement: caches in device memory run it on the device, in place") {
  auto fake = device_fake_make("fake-paged-dev", {OpType::PagedAttention});
  device_register(fake);
  auto no_kernel = device_fake_make("fake-no-paged", {OpType::Relu});
  device_register(no_kernel);
  std::mt19937 gen(5);
  NamedTensors feeds = paged_feeds(gen);
  // The caches as device buffers (zeroed, as on the host).
  auto to_device = [](Device& d, const Tensor& host) {
    void* p = d.alloc(host.nbytes());
    d.copy_to_device(p, host.data(), host.nbytes());
    return Tensor::borrow(host.dtype(), host.shape(), p);
  };
  NamedTensors dev_feeds = feeds;
  dev_feeds[3].second = to_device(*fake, feeds[3].second);
  dev_feeds[4].second = to_device(*fake, feeds[4].second);
  RunOptions opts;
  opts.feed_on_device.assign(dev_feeds.size(), 0);
  opts.feed_on_device[3] = opts.feed_on_device[4] = 1;

  Session s(paged_graph(), on("fake-paged-dev"));
  s.run(dev_feeds, {}, nullptr, opts);
  CHECK(s.device_fallbacks().empty());
  Tensor back = Tensor::empty(DType::F32, feeds[3].second.shape());
  fake->copy_to_host(back.data(), dev_feeds[3].second.data(), back.nbytes());
  CHECK(cache_holds_k(back, feeds[1].second));

  // One cache on each side: no side can hold both writes.
  RunOptions split = opts;
  split.feed_on_device[4] = 0;
  NamedTensors mixed = dev_feeds;
  mixed[4].second = feeds[4].second;
  CHECK_THROWS_WITH_AS(s.run(mixed, {}, nullptr, split), doctest::Contains("partly on the host"),
                       Error);

  // Caches in device memory, and a device without the kernel: the CPU would write a copy.
  std::vector<void*> bufs;
  NamedTensors other = feeds;
  for (int i : {3, 4}) {
    void* p = no_kernel->alloc(feeds[i].second.nbytes());
    bufs.push_back(p);
    other[i].second = Tensor::borrow(DType::F32, feeds[i].second.shape(), p);
  }
  Session t(paged_graph(), on("fake-no-paged"));
  CHECK_THROWS_WITH_AS(t.run(other, {}, nullptr, opts), doctest::Contains("has no kernel for it"),
                       Error);
  for (void* p : bufs) no_kernel->free(p);
  fake->free(dev_feeds[3].second.data());
  fake->free(dev_feeds[4].second.data());
}

TEST_CASE("stateful placement: device caches may not cross an eager node into a host copy") {
  // NonZero (data-dependent: the plan stops there and continues with carried values, copied to
  // the host) before PagedAttention, whose caches are bound in device memory.
  auto fake = device_fake_make("fake-paged-eager", {OpType::PagedAttention, OpType::NonZero});
  device_register(fake);
  Graph g = paged_graph();
  const int x = g.add_value("x"), nz = g.add_value("nz");
  g.inputs.push_back(x);
  Node nonzero;
  nonzero.op = OpType::NonZero;
  nonzero.name = "nonzero";
  nonzero.inputs = {x};
  nonzero.outputs = {nz};
  g.nodes.insert(g.nodes.begin(), nonzero);
  g.outputs.push_back(nz);
  std::mt19937 gen(9);
  NamedTensors feeds = paged_feeds(gen);
  feeds.emplace_back("x", Tensor::zeros(DType::F32, {4}));
  struct Freed {
    Device& d;
    std::vector<void*> p;
    ~Freed() {
      for (void* q : p) d.free(q);
    }
  } bufs{*fake, {}};
  RunOptions opts;
  opts.feed_on_device.assign(feeds.size(), 0);
  for (int i : {3, 4}) {
    bufs.p.push_back(fake->alloc(feeds[i].second.nbytes()));
    fake->copy_to_device(bufs.p.back(), feeds[i].second.data(), feeds[i].second.nbytes());
    feeds[i].second = Tensor::borrow(DType::F32, feeds[i].second.shape(), bufs.p.back());
    opts.feed_on_device[i] = 1;
  }
  Session s(std::move(g), on("fake-paged-eager"));
  CHECK_THROWS_WITH_AS(s.run(feeds, {}, nullptr, opts), doctest::Contains("written in a host copy"),
                       Error);
}
