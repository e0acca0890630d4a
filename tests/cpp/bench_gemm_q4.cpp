// Q4MatMul timings (skipped unless asked for: -tc='q4 bench*' --no-skip): GEMV bandwidth
// against a streaming read, GEMM throughput, and W4A16i against the f32 rows and FusedMatMul
// on SmolLM2's MLP shape. Correctness is test_gemm_q4.cpp's.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "doctest/doctest.h"
#include "ember/thread_pool.h"
#include "kernels/common/quant.h"
#include "kernels/generic/gemm_q4.h"
#if defined(__x86_64__)
#include "kernels/x86/kernels_x86.h"
#endif
#include "op_test_util.h"
#include "q4_test_util.h"
#include "runtime/registry.h"

using namespace ember;
using ember::test::error_of;
using ember::test::op_run;
using ember::test::random_f32;
using namespace ember::test::q4;

TEST_CASE("q4 bench: GEMV bandwidth vs a streaming read, GEMM throughput" *
          doctest::skip(true) * doctest::description("timing only; run with -tc='q4 bench*' --no-skip")) {
  // Rounds interleave every measurement so that load from other processes hits all of them;
  // each reports its best round (what the machine can do) and its median.
  using clock = std::chrono::steady_clock;
  using Stat = test::Timings;
  const auto seconds = test::seconds_since;
  // Streaming read: a sum over 512 MiB, split over the threads.
  std::vector<uint64_t> buf((size_t(512) << 20) / 8);
  for (size_t i = 0; i < buf.size(); i++) buf[i] = i * 0x9e3779b97f4a7c15ull;
  uint64_t sink = 0;
  auto stream = [&](int threads) {
    std::vector<uint64_t> part(threads * 8, 0);
    parallel_for(threads, 1, threads, [&](int64_t i0, int64_t i1) {
      for (int64_t th = i0; th < i1; th++) {
        int64_t n = (int64_t)buf.size() / threads, b = th * n;
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (int64_t i = b; i < b + n; i += 4) {
          s0 += buf[i];
          s1 += buf[i + 1];
          s2 += buf[i + 2];
          s3 += buf[i + 3];
        }
        part[th * 8] = s0 + s1 + s2 + s3;
      }
    });
    for (uint64_t v : part) sink += v;
  };
  // GEMV: 8 weight matrices of 4096 x 4096 (72 MiB at group 128, 2x L3), rotated; group 32
  // (the GGUF case) shares the codes with its own scales and offsets, f32 and f16.
  const int64_t N = 4096, K = 4096, mats = 8;
  std::vector<Q4W> w128, w32, w32h;
  for (int64_t i = 0; i < mats; i++) {
    Q4W p = q4_alloc(N, K, 128), p32 = q4_alloc(N, K, 32), p16 = q4_alloc(N, K, 32);
    std::mt19937 rng(700 + i);
    for (int64_t j = 0; j < p.codes.numel(); j++) p.codes.ptr<uint8_t>()[j] = (uint8_t)rng();
    for (Q4W* q : {&p, &p32}) {
      std::fill(q->scales.ptr<float>(), q->scales.ptr<float>() + q->scales.numel(), 0.01f);
      std::fill(q->offsets.ptr<float>(), q->offsets.ptr<float>() + q->offsets.numel(), -0.08f);
    }
    p32.codes = p.codes;
    p16.codes = p.codes;
    p16.scales = Tensor::empty(DType::F16, p32.scales.shape());
    p16.offsets = Tensor::empty(DType::F16, p32.offsets.shape());
    std::fill(p16.scales.ptr<uint16_t>(), p16.scales.ptr<uint16_t>() + p16.scales.numel(),
              f32_to_f16(0.01f));
    std::fill(p16.offsets.ptr<uint16_t>(), p16.offsets.ptr<uint16_t>() + p16.offsets.numel(),
              f32_to_f16(-0.08f));
    w128.push_back(std::move(p));
    w32.push_back(std::move(p32));
    w32h.push_back(std::move(p16));
  }
  auto wbytes = [&](int64_t group, double scale_bytes = 4.0) {
    return N * cpu::q4_blocks(K) * 16.0 + 2.0 * N * cpu::q4_groups(K, group) * scale_bytes;
  };
  Tensor x = random_f32({1, K}, 701), y = Tensor::zeros(DType::F32, {1, N});
  Tensor x64 = random_f32({64, K}, 702), y64 = Tensor::zeros(DType::F32, {64, N});
  // The kernel alone, on inputs already in place.
  auto call = [&](KernelFn fn, const Q4W& p, const Tensor& a, Tensor& out, int threads) {
    Node node = q4_node(p);
    node.inputs = {0, 1, 2, 3};
    KernelCtx ctx{node, {&a, &p.codes, &p.scales, &p.offsets}, {&out}, threads};
    fn(ctx);
  };
  // Every kernel but the generic one (slow on x86: fmaf calls) in each round, interleaved.
  std::vector<NamedQ4> ks;
  for (NamedQ4 k : q4_kernels())
    if (std::string(k.name) != "q4matmul" || q4_kernels().size() == 1) ks.push_back(k);
  struct Stats {
    Stat st[3], g128[3], g32[3], g32h[3], gemm[3];
  };
  std::vector<Stats> s(ks.size());
  for (int r = 0; r < 25; r++)
    for (int threads : {1, 2})
      for (size_t i = 0; i < ks.size(); i++) {
        KernelFn fn = ks[i].fn;
        auto t0 = clock::now();
        stream(threads);
        s[i].st[threads].t.push_back(seconds(t0));
        t0 = clock::now();
        for (const Q4W& p : w128) call(fn, p, x, y, threads);
        s[i].g128[threads].t.push_back(seconds(t0) / mats);
        t0 = clock::now();
        for (const Q4W& p : w32) call(fn, p, x, y, threads);
        s[i].g32[threads].t.push_back(seconds(t0) / mats);
        t0 = clock::now();
        for (const Q4W& p : w32h) call(fn, p, x, y, threads);
        s[i].g32h[threads].t.push_back(seconds(t0) / mats);
        if (r % 5 == 0) {
          t0 = clock::now();
          call(fn, w128[0], x64, y64, threads);
          s[i].gemm[threads].t.push_back(seconds(t0));
        }
      }
  for (size_t i = 0; i < ks.size(); i++)
    for (int threads : {1, 2}) {
      const Stats& k = s[i];
      const Stat &st = k.st[threads], &g128 = k.g128[threads], &g32 = k.g32[threads],
                 &g32h = k.g32h[threads];
      double sb = buf.size() * 8.0;
      MESSAGE(std::string(ks[i].name), ", ", threads, " thread(s), best (median): stream read ",
              sb / st.best() / 1e9, " (", sb / st.median() / 1e9,
              ") GB/s; GEMV 4096x4096 group 128 ", wbytes(128) / g128.best() / 1e9, " (",
              wbytes(128) / g128.median() / 1e9, ") GB/s = ",
              st.best() / sb * wbytes(128) / g128.best(), " of the stream; group 32 ",
              wbytes(32) / g32.best() / 1e9, " (", wbytes(32) / g32.median() / 1e9,
              ") GB/s = ", st.best() / sb * wbytes(32) / g32.best(), ", median ",
              g32.median() * 1e6, " us; group 32 f16 ", wbytes(32, 2.0) / g32h.best() / 1e9,
              " (", wbytes(32, 2.0) / g32h.median() / 1e9, ") GB/s, median ",
              g32h.median() * 1e6, " us; GEMM M=64 ",
              2.0 * 64 * N * K / k.gemm[threads].best() / 1e9, " GOPS");
    }
  CHECK(sink != 1);
}

TEST_CASE("q4 bench: W4A16i vs f32 rows vs FusedMatMul on SmolLM2's MLP shape" *
          doctest::skip(true) *
          doctest::description("timing only; run with -tc='q4 bench: W4A16i*' --no-skip")) {
  // K = 576, N = 1536, group 32, f16 scales (GGUF Q4_1); the FusedMatMul on the same shape with
  // f32 weights packed at load is the f32 path's ceiling. W4A16i on every x86 kernel (AVX2 and
  // AVX-512: before and after), f32 rows on the best. Median of 7 rounds, 2 threads, each round
  // interleaving them all.
  using clock = std::chrono::steady_clock;
  const int64_t K = 576, N = 1536;
  Q4W p32 = q4_from_float(random_f32({N, K}, 990), 32, true);
  Q4W p = q4_f16_pair(p32).f16;
  Tensor wf = random_f32({N, K}, 991);
  Tensor packed = Tensor::empty(DType::F32, {(N + 15) / 16, K, 16});
  cpu::sgemm_pack_b(wf.ptr<float>(), 1, K, K, N, packed.ptr<float>());
  std::vector<NamedQ4> w4;  // the W4A16i kernels timed: all but the generic one (fmaf calls)
  for (NamedQ4 k : q4_kernels())
    if (std::string(k.name) != "q4matmul" || q4_kernels().size() == 1) w4.push_back(k);
  KernelFn q4 = q4_kernels().back().fn;
#if defined(__x86_64__)
  KernelFn fused = cpu_isa() >= Isa::Avx2 ? cpu::fused_matmul_f32_avx2 : cpu::fused_matmul_f32;
#else
  KernelFn fused = cpu::fused_matmul_f32;
#endif
  for (int64_t M : {1, 16, 64, 512}) {
    Tensor a = random_f32({M, K}, 992), y = Tensor::zeros(DType::F32, {M, N});
    Tensor none = row_flags(M, 1), all = row_flags(M, 0);
    Node qn = q4_node(p);
    qn.inputs = {0, 1, 2, 3, -1, 5};
    Node fn = test::node(OpType::FusedMatMul);
    fn.attrs.set("n", N);
    fn.inputs = {0, 1};
    KernelCtx ci{qn, {&a, &p.codes, &p.scales, &p.offsets, nullptr, &none}, {&y}, 2};
    KernelCtx cf{qn, {&a, &p.codes, &p.scales, &p.offsets, nullptr, &all}, {&y}, 2};
    KernelCtx cm{fn, {&a, &packed}, {&y}, 2};
    std::vector<std::pair<KernelFn, KernelCtx*>> runs;
    for (NamedQ4 k : w4) runs.push_back({k.fn, &ci});
    runs.push_back({q4, &cf});
    runs.push_back({fused, &cm});
    const int reps = (int)std::max<int64_t>(3, 2000 / M);
    std::vector<std::vector<double>> t(runs.size());
    for (int r = 0; r < 7; r++)
      for (size_t i = 0; i < runs.size(); i++) {
        auto t0 = clock::now();
        for (int j = 0; j < reps; j++) runs[i].first(*runs[i].second);
        t[i].push_back(std::chrono::duration<double>(clock::now() - t0).count() / reps);
      }
    for (auto& v : t) std::sort(v.begin(), v.end());
    const double macs = (double)M * N * K;
    std::string w4s;
    for (size_t i = 0; i < w4.size(); i++)
      w4s += std::string(i ? ", " : "") + w4[i].name + " " + std::to_string(t[i][3] * 1e6) +
             " us (" + std::to_string(macs / t[i][3] / 1e9) + " GMAC/s)";
    const size_t f = w4.size();
    MESSAGE("M = ", M, ": W4A16i ", w4s, "; f32 rows ", t[f][3] * 1e6, " us (",
            macs / t[f][3] / 1e9, "), FusedMatMul f32 ", t[f + 1][3] * 1e6, " us (",
            macs / t[f + 1][3] / 1e9, ")");
  }
}
