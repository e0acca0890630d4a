// Random Q4MatMul weights for the q4 tests (cuda/tests/test_q4.cpp, and the emulated kernel
// runs of cuda/emu/tests/test_emu_q4.cpp): codes in Q4MatMul's layout [n, ceil(k / 32), 16],
// scales and offsets [n, ceil(k / group)] as f32 or f16.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "ember/dtype.h"
#include "ember/tensor.h"

namespace ember::cuda {

struct Q4Case {
  int64_t n, k, group;
  std::vector<uint8_t> codes;
  Tensor scales, offsets;
};

inline Q4Case make_case(int64_t n, int64_t k, int64_t group, bool f16, std::mt19937& gen) {
  Q4Case c{n, k, group, {}, {}, {}};
  const int64_t nb = (k + 31) / 32, ng = (k + group - 1) / group;
  c.codes.assign(n * nb * 16, 0);
  std::uniform_int_distribution<int> nib(0, 15);
  for (int64_t r = 0; r < n; r++)
    for (int64_t col = 0; col < k; col++) {
      uint8_t& byte = c.codes[(r * nb + col / 32) * 16 + col % 16];
      byte |= col % 32 < 16 ? nib(gen) : nib(gen) << 4;
    }
  std::uniform_real_distribution<float> sd(0.01f, 0.1f), od(-1.0f, 0.5f);
  const DType dt = f16 ? DType::F16 : DType::F32;
  c.scales = Tensor::empty(dt, {n, ng});
  c.offsets = Tensor::empty(dt, {n, ng});
  for (int64_t i = 0; i < n * ng; i++) {
    const float s = sd(gen), o = od(gen);
    if (f16) {
      c.scales.ptr<uint16_t>()[i] = f32_to_f16(s);
      c.offsets.ptr<uint16_t>()[i] = f32_to_f16(o);
    } else {
      c.scales.ptr<float>()[i] = s;
      c.offsets.ptr<float>()[i] = o;
    }
  }
  return c;
}

// The param the kernel sees: fp16 (rounded from f32).
inline float param_f16(const Tensor& t, int64_t i) {
  return t.dtype() == DType::F16 ? f16_to_f32(t.ptr<uint16_t>()[i]) : f16_to_f32(f32_to_f16(t.ptr<float>()[i]));
}

}  // namespace ember::cuda
