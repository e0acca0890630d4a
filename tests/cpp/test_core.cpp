// Core: the DType table, f16/bf16 conversions (exhaustive and against an independent
// nearest-value reference), Tensor views and copies, the thread pool (coverage, exceptions,
// nesting, concurrency, fork), and one OpDef row per OpType.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "doctest/doctest.h"
#include "ember/dtype.h"
#include "ember/error.h"
#include "ember/op.h"
#include "ember/tensor.h"
#include "ember/thread_pool.h"

using namespace ember;

namespace {

float bits_f32(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t f32_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
bool f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff); }
bool bf16_is_nan(uint16_t h) { return (h & 0x7f80) == 0x7f80 && (h & 0x007f); }

// Independent rounding reference: the non-negative finite values of a 16-bit format in
// increasing order (their bit patterns are increasing too), plus the first overflow pattern
// (inf) at the value the exponent would give next, so overflow rounds like IEEE says.
struct NearestRef {
  std::vector<double> values;  // index = bit pattern
  NearestRef(uint16_t inf_bits, float (*decode)(uint16_t), double inf_value) {
    for (uint32_t b = 0; b < inf_bits; b++) values.push_back(decode((uint16_t)b));
    values.push_back(inf_value);
  }
  // Round to nearest, ties to the even pattern; NaN is handled by the caller.
  uint16_t round(float x, uint16_t sign_bit) const {
    double a = std::fabs((double)x);
    uint16_t sign = std::signbit(x) ? sign_bit : 0;
    if (a >= values.back()) return (uint16_t)(sign | (values.size() - 1));
    size_t hi = std::upper_bound(values.begin(), values.end(), a) - values.begin();
    size_t lo = hi - 1;
    double dl = a - values[lo], dh = values[hi] - a;
    size_t pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
    return (uint16_t)(sign | pick);
  }
};

const NearestRef& f16_ref() {
  static NearestRef r(0x7c00, f16_to_f32, 65536.0);
  return r;
}
const NearestRef& bf16_ref() {
  static NearestRef r(0x7f80, bf16_to_f32, std::ldexp(1.0, 128));
  return r;
}

}  // namespace

// ---- DType ----------------------------------------------------------------------------------

TEST_CASE("dtype: table, names and sizes") {
  struct Row { DType t; const char* name; size_t size; bool is_float, is_quant; };
  const Row rows[] = {
      {DType::F32, "float32", 4, true, false},   {DType::F16, "float16", 2, true, false},
      {DType::BF16, "bfloat16", 2, true, false}, {DType::F64, "float64", 8, true, false},
      {DType::I8, "int8", 1, false, false},      {DType::U8, "uint8", 1, false, false},
      {DType::I16, "int16", 2, false, false},    {DType::I32, "int32", 4, false, false},
      {DType::I64, "int64", 8, false, false},    {DType::Bool, "bool", 1, false, false},
      {DType::Q8_0, "q8_0", 0, false, true},     {DType::Q4_0, "q4_0", 0, false, true},
      {DType::Q4_1, "q4_1", 0, false, true},     {DType::Q4G, "q4g", 0, false, true},
  };
  REQUIRE(sizeof(rows) / sizeof(rows[0]) == (size_t)DType::Count);
  for (const Row& r : rows) {
    CAPTURE(r.name);
    const DTypeInfo& info = dtype_info(r.t);
    CHECK(info.dtype == r.t);
    CHECK(std::string(dtype_name(r.t)) == r.name);
    CHECK(dtype_size(r.t) == r.size);
    CHECK(info.is_float == r.is_float);
    CHECK(info.is_quant == r.is_quant);
    DType back = DType::Count;
    CHECK(dtype_from_name(r.name, &back));
    CHECK(back == r.t);
  }
  CHECK(!dtype_info(DType::U8).is_signed);
  CHECK(!dtype_info(DType::Bool).is_signed);
  CHECK(dtype_info(DType::I8).is_signed);
  DType out = DType::F32;
  CHECK(!dtype_from_name("float", &out));
  CHECK(!dtype_from_name("", &out));
  CHECK(!dtype_from_name("Float32", &out));
  CHECK(out == DType::F32);  // untouched on failure
  CHECK_THROWS_AS(dtype_info(DType::Count), Error);
  CHECK_THROWS_AS(dtype_info((DType)200), Error);
}

// ---- f16 / bf16 -----------------------------------------------------------------------------

TEST_CASE("f16: every bit pattern round trips") {
  int nans = 0;
  for (uint32_t b = 0; b < 65536; b++) {
    uint16_t h = (uint16_t)b;
    float f = f16_to_f32(h);
    if (f16_is_nan(h)) {
      nans++;
      CHECK(std::isnan(f));
      uint16_t back = f32_to_f16(f);
      CHECK(f16_is_nan(back));
      CHECK((back & 0x8000) == (h & 0x8000));
      continue;
    }
    if (f32_to_f16(f) != h) FAIL_CHECK("f16 pattern ", b, " -> ", f, " -> ", f32_to_f16(f));
    // Decoding agrees with the format's definition.
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double want = e == 0 ? std::ldexp((double)m, -24)
                  : e == 31 ? INFINITY : std::ldexp(1024.0 + m, e - 25);
    if (h & 0x8000) want = -want;
    if ((double)f != want) FAIL_CHECK("f16 pattern ", b, " decodes to ", f, ", want ", want);
  }
  CHECK(nans == 2 * 1023);
}

TEST_CASE("f16: known values, specials and denormals") {
  CHECK(f32_to_f16(0.0f) == 0x0000);
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);                 // largest finite
  CHECK(f32_to_f16(65519.99f) == 0x7bff);                // below the halfway point
  CHECK(f32_to_f16(65520.0f) == 0x7c00);                 // halfway: ties to even = inf
  CHECK(f32_to_f16(1e10f) == 0x7c00);
  CHECK(f32_to_f16(-INFINITY) == 0xfc00);
  CHECK(f16_is_nan(f32_to_f16(NAN)));
  CHECK(f32_to_f16(std::ldexp(1.0f, -14)) == 0x0400);    // smallest normal
  CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);    // smallest denormal
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);    // halfway to it: ties to even
  CHECK(f32_to_f16(std::ldexp(1.0f, -25) * 1.0001f) == 0x0001);
  CHECK(f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);    // 1.5 denormal ulps: ties to even
  CHECK(f32_to_f16(std::ldexp(1.0f, -130)) == 0x0000);   // f32 denormal
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);      // tie -> even
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // tie -> even (up)
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);
  CHECK(f16_to_f32(0x3555) == doctest::Approx(0.333251953125));
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(std::isinf(f16_to_f32(0x7c00)));
}

TEST_CASE("f16: f32 -> f16 rounds to nearest even (ties, neighbours, random)") {
  const NearestRef& ref = f16_ref();
  auto check = [&](float x) {
    uint16_t got = f32_to_f16(x);
    if (std::isnan(x)) {
      if (!f16_is_nan(got)) FAIL_CHECK("nan -> ", got);
      return;
    }
    uint16_t want = ref.round(x, 0x8000);
    if (got != want) FAIL_CHECK("x=", x, " bits=", f32_bits(x), " got ", got, " want ", want);
#if defined(__aarch64__) || defined(__FLT16_MAX__)
#if defined(__aarch64__)
    // g++ < 13 defines __FLT16_MAX__ but has no _Float16 in C++ here; __fp16 is IEEE binary16.
    __fp16 hw = (__fp16)x;
#else
    _Float16 hw = (_Float16)x;  // the compiler's conversion, where g++ has _Float16
#endif
    uint16_t hb;
    std::memcpy(&hb, &hw, 2);
    if (got != hb) FAIL_CHECK("x=", x, " got ", got, " _Float16 gives ", hb);
#endif
  };
  // Every halfway point between neighbouring f16 values, and the f32 values either side.
  for (uint32_t b = 0; b < 0x7c00; b++) {
    double mid = (f16_to_f32((uint16_t)b) + (b + 1 < 0x7c00 ? (double)f16_to_f32((uint16_t)(b + 1)) : 65536.0)) / 2;
    float m = (float)mid;  // exact: f16 midpoints have at most 12 significant bits
    REQUIRE((double)m == mid);
    for (float x : {m, std::nextafter(m, 0.0f), std::nextafter(m, INFINITY)}) {
      check(x);
      check(-x);
    }
  }
  std::mt19937 rng(1234);
  for (int i = 0; i < 2000000; i++) check(bits_f32(rng()));
  for (int i = 0; i < 200000; i++) check(bits_f32((rng() & 0x807fffff) | ((100 + rng() % 50) << 23)));
}

TEST_CASE("bf16: round trip, ties to even, specials") {
  for (uint32_t b = 0; b < 65536; b++) {
    uint16_t h = (uint16_t)b;
    float f = bf16_to_f32(h);
    CHECK(f32_bits(f) == b << 16);
    if (bf16_is_nan(h)) {
      CHECK(bf16_is_nan(f32_to_bf16(f)));
      continue;
    }
    if (f32_to_bf16(f) != h) FAIL_CHECK("bf16 pattern ", b);
  }
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);      // tie -> even
  CHECK(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);  // tie -> even (up)
  CHECK(f32_to_bf16(3.4028235e38f) == 0x7f80);                    // FLT_MAX rounds to inf
  CHECK(f32_to_bf16(-INFINITY) == 0xff80);
  CHECK(bf16_is_nan(f32_to_bf16(bits_f32(0x7f800001))));          // signalling NaN stays NaN
  CHECK(bf16_is_nan(f32_to_bf16(NAN)));
  CHECK(f32_to_bf16(bits_f32(0x00000001)) == 0x0000);              // f32 denormals
  CHECK(f32_to_bf16(bits_f32(0x00018000)) == 0x0002);              // denormal tie -> even
  const NearestRef& ref = bf16_ref();
  std::mt19937 rng(99);
  for (int i = 0; i < 2000000; i++) {
    float x = bits_f32(rng());
    if (std::isnan(x)) continue;
    uint16_t got = f32_to_bf16(x), want = ref.round(x, 0x8000);
    if (got != want) FAIL_CHECK("x bits=", f32_bits(x), " got ", got, " want ", want);
  }
}

// ---- Tensor ---------------------------------------------------------------------------------

TEST_CASE("tensor: empty, zeros and sizes") {
  Tensor t = Tensor::empty(DType::F32, {2, 3, 4});
  CHECK(t.defined());
  CHECK(t.rank() == 3);
  CHECK(t.numel() == 24);
  CHECK(t.nbytes() == 96);
  CHECK(t.dim(-1) == 4);
  CHECK(t.strides() == Shape{12, 4, 1});
  CHECK(t.is_contiguous());
  CHECK((reinterpret_cast<uintptr_t>(t.data()) % 64) == 0);
  CHECK(t.owner() != nullptr);

  Tensor z = Tensor::zeros(DType::F16, {5, 7});
  CHECK(z.nbytes() == 70);
  for (int i = 0; i < 35; i++) CHECK(z.ptr<uint16_t>()[i] == 0);

  Tensor e = Tensor::zeros(DType::I64, {3, 0});
  CHECK(e.numel() == 0);
  CHECK(e.nbytes() == 0);
  CHECK(e.defined());
  Tensor s = Tensor::zeros(DType::F32, {});  // scalar
  CHECK(s.numel() == 1);
  CHECK(s.rank() == 0);
  CHECK(!Tensor().defined());
  CHECK_THROWS_AS(Tensor::empty(DType::F32, {2, -1}), Error);
  CHECK(shape_str({2, 3}) == "[2, 3]");
  CHECK(shape_numel({}) == 1);
}

TEST_CASE("tensor: borrow keeps the owner alive and shares memory") {
  auto buf = std::make_shared<std::vector<float>>(6, 1.5f);
  std::weak_ptr<std::vector<float>> watch = buf;
  Tensor b = Tensor::borrow(DType::F32, {2, 3}, buf->data(), buf);
  buf.reset();
  CHECK(!watch.expired());
  CHECK(b.ptr<float>()[5] == 1.5f);
  b.ptr<float>()[0] = 9.0f;
  Tensor alias = b;  // copies share the data
  CHECK(alias.ptr<float>()[0] == 9.0f);
  CHECK(alias.data() == b.data());
  b = Tensor();
  alias = Tensor();
  CHECK(watch.expired());

  float raw[4] = {1, 2, 3, 4};
  Tensor nb = Tensor::borrow(DType::F32, {4}, raw);  // no owner: the caller keeps it alive
  CHECK(nb.data() == raw);
  CHECK(nb.owner() == nullptr);
  CHECK(tensor_get_f64(nb, 2) == 3.0);
}

TEST_CASE("tensor: contiguous of transposed views") {
  // a [2, 3] = 0..5; its transpose [3, 2] as a strided view.
  float a[6] = {0, 1, 2, 3, 4, 5};
  Tensor t = Tensor::borrow(DType::F32, {3, 2}, a, nullptr, {1, 3});
  CHECK(!t.is_contiguous());
  Tensor c = t.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.data() != (void*)a);
  const float want[6] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; i++) CHECK(c.ptr<float>()[i] == want[i]);
  CHECK_THROWS_AS(t.reshaped({6}), Error);  // a view of strided memory cannot be reshaped

  // 3-D permutation (2, 0, 1) of a [2, 3, 4] int16 tensor.
  std::vector<int16_t> src(24);
  for (int i = 0; i < 24; i++) src[i] = (int16_t)(i * 3 - 20);
  Tensor p = Tensor::borrow(DType::I16, {4, 2, 3}, src.data(), nullptr, {1, 12, 4});
  Tensor pc = p.contiguous();
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 2; j++)
      for (int k = 0; k < 3; k++) CHECK(pc.ptr<int16_t>()[(i * 2 + j) * 3 + k] == src[j * 12 + k * 4 + i]);

  // Size-1 dims may carry any stride and still be contiguous; contiguous() then shares memory.
  Tensor one = Tensor::borrow(DType::F32, {1, 6}, a, nullptr, {99, 1});
  CHECK(one.is_contiguous());
  CHECK(one.contiguous().data() == (void*)a);
  // A broadcast (stride 0) view materialises.
  Tensor bc = Tensor::borrow(DType::F32, {3, 2}, a, nullptr, {0, 1});
  Tensor bcc = bc.contiguous();
  for (int i = 0; i < 6; i++) CHECK(bcc.ptr<float>()[i] == a[i % 2]);
}

TEST_CASE("tensor: reshaped and clone") {
  Tensor t = Tensor::empty(DType::I32, {2, 6});
  for (int i = 0; i < 12; i++) t.ptr<int32_t>()[i] = i;
  Tensor r = t.reshaped({3, 2, 2});
  CHECK(r.data() == t.data());
  CHECK(r.strides() == Shape{4, 2, 1});
  CHECK(r.shape() == Shape{3, 2, 2});
  CHECK(tensor_get_i64(r, 11) == 11);
  CHECK_THROWS_AS(t.reshaped({5}), Error);

  Tensor c = t.clone();
  CHECK(c.data() != t.data());
  CHECK(c.shape() == t.shape());
  c.ptr<int32_t>()[0] = 100;
  CHECK(t.ptr<int32_t>()[0] == 0);
  CHECK(tensor_to_i64_vector(c)[11] == 11);

  float a[6] = {0, 1, 2, 3, 4, 5};
  Tensor v = Tensor::borrow(DType::F32, {3, 2}, a, nullptr, {1, 3});
  Tensor vc = v.clone();  // clone of a view is contiguous
  CHECK(vc.is_contiguous());
  CHECK(vc.ptr<float>()[1] == 3.0f);
  Tensor empty = Tensor::zeros(DType::F32, {0, 4}).clone();
  CHECK(empty.numel() == 0);
}

// ---- thread pool ----------------------------------------------------------------------------

TEST_CASE("parallel_for: every index exactly once") {
  CHECK(thread_pool_size() >= 1);
  for (int64_t n : {0, 1, 2, 3, 7, 64, 1000, 100003}) {
    for (int64_t grain : {0, 1, 3, 64, 1000000}) {
      for (int max_threads : {0, 1, 2, 3, 4, 8, 64}) {
        CAPTURE(n); CAPTURE(grain); CAPTURE(max_threads);
        std::vector<std::atomic<int>> hits(n);
        std::atomic<int> chunks{0}, bad{0};
        parallel_for(n, grain, max_threads, [&](int64_t b, int64_t e) {
          if (!(0 <= b && b < e && e <= n)) bad++;
          chunks++;
          for (int64_t i = b; i < e; i++) hits[i]++;
        });
        CHECK(bad == 0);
        CHECK(chunks <= std::max(max_threads, 1));
        int wrong = 0;
        for (int64_t i = 0; i < n; i++) wrong += hits[i] != 1;
        CHECK(wrong == 0);
      }
    }
  }
}

TEST_CASE("parallel_for: chunks hold at least grain items") {
  // thread_pool.h promises chunks "of at least `grain` items" (when there is more than one).
  for (int64_t n : {5, 7, 10, 100, 1001}) {
    for (int64_t grain : {2, 3, 64}) {
      CAPTURE(n); CAPTURE(grain);
      std::atomic<int> chunks{0}, small{0};
      parallel_for(n, grain, 64, [&](int64_t b, int64_t e) {
        chunks++;
        if (e - b < grain) small++;
      });
      if (chunks > 1) CHECK(small == 0);
    }
  }
}

TEST_CASE("parallel_for: chunk boundaries are deterministic") {
  auto boundaries = [](int64_t n, int64_t grain, int mt) {
    std::mutex mu;
    std::vector<std::pair<int64_t, int64_t>> out;
    parallel_for(n, grain, mt, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(mu);
      out.emplace_back(b, e);
    });
    std::sort(out.begin(), out.end());
    return out;
  };
  for (int rep = 0; rep < 20; rep++) {
    CHECK(boundaries(1001, 7, 8) == boundaries(1001, 7, 8));
    CHECK(boundaries(37, 1, 3) == boundaries(37, 1, 3));
  }
}

TEST_CASE("parallel_for: exceptions reach the caller") {
  for (int rep = 0; rep < 50; rep++) {
    CHECK_THROWS_AS(parallel_for(1000, 1, 8, [](int64_t b, int64_t e) {
                      if (b <= 500 && 500 < e) throw std::runtime_error("boom");
                    }),
                    std::runtime_error);
  }
  // The ember error kind survives the trip.
  try {
    parallel_for(100, 1, 4, [](int64_t, int64_t) { fail(ErrorKind::Input, "[test] bad"); });
    FAIL("no exception");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::Input);
    CHECK(std::string(e.what()) == "[test] bad");
  }
  // Single-chunk runs (on the caller) throw too, and the pool still works afterwards.
  CHECK_THROWS(parallel_for(5, 100, 8, [](int64_t, int64_t) { throw 7; }));
  std::atomic<int64_t> sum{0};
  parallel_for(1000, 1, 8, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; i++) sum += i; });
  CHECK(sum == 999 * 1000 / 2);
}

TEST_CASE("parallel_for: nested and concurrent calls complete") {
  // Nested: each outer chunk runs its own parallel_for.
  std::vector<std::atomic<int>> hits(64 * 100);
  parallel_for(64, 1, 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++)
      parallel_for(100, 1, 8, [&](int64_t bb, int64_t ee) {
        for (int64_t j = bb; j < ee; j++) hits[i * 100 + j]++;
      });
  });
  int wrong = 0;
  for (auto& h : hits) wrong += h != 1;
  CHECK(wrong == 0);

  // Four threads at once, each with many small jobs (some nested).
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 300; rep++) {
        int64_t n = 1 + (rep * 37 + t * 11) % 2000;
        std::atomic<int64_t> sum{0};
        parallel_for(n, 1 + rep % 5, 1 + (rep + t) % 8, [&](int64_t b, int64_t e) {
          int64_t s = 0;
          for (int64_t i = b; i < e; i++) s += i;
          if (rep % 10 == 0) parallel_for(4, 1, 2, [](int64_t, int64_t) {});
          sum += s;
        });
        if (sum != n * (n - 1) / 2) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
}

namespace {

// Forks; the child runs a parallel_for and exits 0 when its sum is right. Returns the child's
// exit status, or -1 when it had to be killed after `timeout`.
int fork_and_run_child(std::chrono::seconds timeout) {
  pid_t pid = fork();
  if (pid == 0) {
    std::atomic<int64_t> sum{0};
    parallel_for(10000, 1, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) sum += i;
    });
    _exit(sum == 10000LL * 9999 / 2 ? 0 : 1);
  }
  REQUIRE(pid > 0);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

TEST_CASE("parallel_for: fork after the pool has started") {
  std::atomic<int64_t> warm{0};
  parallel_for(1000, 1, 64, [&](int64_t b, int64_t e) { warm += e - b; });  // workers exist now
  REQUIRE(warm == 1000);
  CHECK(fork_and_run_child(std::chrono::seconds(20)) == 0);

  // Fork while another thread keeps the pool busy: the child must still not hang.
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop) parallel_for(256, 1, 64, [](int64_t, int64_t) {});
  });
  int ok = 0;
  for (int i = 0; i < 10; i++) ok += fork_and_run_child(std::chrono::seconds(20)) == 0;
  stop = true;
  busy.join();
  CHECK(ok == 10);
}

// ---- ops ------------------------------------------------------------------------------------

TEST_CASE("ops: every OpType has exactly one OpDef row") {
  int missing = 0;
  for (int i = 0; i < (int)OpType::Count; i++) {
    OpType op = (OpType)i;
    CAPTURE(i);
    CHECK(op_has_def(op));
    if (!op_has_def(op)) {
      missing++;
      continue;
    }
    const OpDef& d = op_def(op);
    CHECK(d.op == op);
    REQUIRE(d.name != nullptr);
    OpType back = OpType::Count;
    CHECK(op_from_name(d.name, &back));
    CHECK(back == op);
    CHECK((d.infer != nullptr));
    CHECK((d.reference != nullptr));
    CHECK(d.min_inputs >= 0);
    CHECK((d.max_inputs < 0 || d.max_inputs >= d.min_inputs));
    CHECK(d.max_outputs >= d.min_outputs);
  }
  if (missing) MESSAGE(missing, " OpTypes still have no OpDef row");
  CHECK(!op_has_def(OpType::Count));
  CHECK_THROWS_AS(op_def(OpType::Count), Error);
  OpType out;
  CHECK(!op_from_name("NoSuchOp", &out));
}
