// Reference (de)quantization for the formats in quant.h: the specification that every fast
// kernel (CPU and CUDA) and every repacking pass is tested against. The block formats round
// exactly as ggml's reference quantizers do, so a block quantized here matches ggml's bit for
// bit. Symmetric Q4G uses the q4_0 rule (float scale), so with G = 32 it encodes like q4_0.
#include "kernels/common/quant.h"

#include <algorithm>
#include <cmath>

#include "ember/error.h"

namespace ember {
namespace {

void check_blocks(const char* name, const float* in, int64_t n, int64_t block) {
  EMBER_CHECK(n >= 0 && n % block == 0, Model, "[quant] ", name, ": ", n,
              " elements is not a multiple of the block size ", block);
  if (!in) return;
  for (int64_t i = 0; i < n; i++)
    EMBER_CHECK(std::isfinite(in[i]), Model, "[quant] ", name, ": element ", i,
                " is not finite (", in[i], ")");
}

// f16 scale; a scale that overflows f16 would decode the whole block to inf/nan.
uint16_t scale_to_f16(const char* name, float d) {
  uint16_t h = f32_to_f16(d);
  EMBER_CHECK((h & 0x7c00) != 0x7c00, Model, "[quant] ", name, ": block scale ", d,
              " overflows float16");
  return h;
}

const QuantTraits kQuantTraits[] = {
    {DType::Q8_0, EMBER_QK8_0, sizeof(block_q8_0), DType::Q8_0, q8_0_to_float, q8_0_from_float},
    {DType::Q4_0, EMBER_QK4_0, sizeof(block_q4_0), DType::Q8_0, q4_0_to_float, q4_0_from_float},
    {DType::Q4_1, EMBER_QK4_1, sizeof(block_q4_1), DType::Q8_0, q4_1_to_float, q4_1_from_float},
    {DType::Q4G, 0, 0, DType::Q8_0, nullptr, nullptr},
};

}  // namespace

const QuantTraits& quant_traits(DType t) {
  for (const QuantTraits& q : kQuantTraits)
    if (q.dtype == t) return q;
  fail(ErrorKind::Internal, "[quant] ", (size_t)t < (size_t)DType::Count ? dtype_name(t) : "?",
       " is not a quantized format");
}

int64_t quant_row_bytes(DType t, int64_t n) {
  const QuantTraits& q = quant_traits(t);
  EMBER_CHECK(q.block_size > 0, Internal, "[quant] ", dtype_name(t),
              " has no fixed block size (use q4g_row_bytes)");
  check_blocks(dtype_name(t), nullptr, n, q.block_size);
  return n / q.block_size * q.block_bytes;
}

// ---- Q8_0 -----------------------------------------------------------------------------------

void q8_0_from_float(const float* in, void* blocks, int64_t n) {
  check_blocks("q8_0", in, n, EMBER_QK8_0);
  auto* y = static_cast<block_q8_0*>(blocks);
  for (int64_t b = 0; b < n / EMBER_QK8_0; b++) {
    const float* x = in + b * EMBER_QK8_0;
    float amax = 0.0f;
    for (int j = 0; j < EMBER_QK8_0; j++) amax = std::max(amax, std::fabs(x[j]));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = scale_to_f16("q8_0", d);
    for (int j = 0; j < EMBER_QK8_0; j++) y[b].qs[j] = (int8_t)std::roundf(x[j] * id);
  }
}

void q8_0_to_float(const void* blocks, float* out, int64_t n) {
  check_blocks("q8_0", nullptr, n, EMBER_QK8_0);
  const auto* y = static_cast<const block_q8_0*>(blocks);
  for (int64_t b = 0; b < n / EMBER_QK8_0; b++) {
    float d = f16_to_f32(y[b].d);
    for (int j = 0; j < EMBER_QK8_0; j++) out[b * EMBER_QK8_0 + j] = y[b].qs[j] * d;
  }
}

// ---- Q4_0 -----------------------------------------------------------------------------------

void q4_0_from_float(const float* in, void* blocks, int64_t n) {
  check_blocks("q4_0", in, n, EMBER_QK4_0);
  auto* y = static_cast<block_q4_0*>(blocks);
  constexpr int half = EMBER_QK4_0 / 2;
  for (int64_t b = 0; b < n / EMBER_QK4_0; b++) {
    const float* x = in + b * EMBER_QK4_0;
    float amax = 0.0f, vmax = 0.0f;  // vmax: the signed element of largest magnitude
    for (int j = 0; j < EMBER_QK4_0; j++) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
    }
    // Dividing by -8 maps vmax exactly onto code 0; the other side reaches only +7.
    float d = vmax / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = scale_to_f16("q4_0", d);
    for (int j = 0; j < half; j++) {
      int q0 = std::min(15, (int)(x[j] * id + 8.5f));  // x * id in [-8, 8]: truncation rounds
      int q1 = std::min(15, (int)(x[j + half] * id + 8.5f));
      y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
  }
}

void q4_0_to_float(const void* blocks, float* out, int64_t n) {
  check_blocks("q4_0", nullptr, n, EMBER_QK4_0);
  const auto* y = static_cast<const block_q4_0*>(blocks);
  for (int64_t b = 0; b < n / EMBER_QK4_0; b++) {
    float d = f16_to_f32(y[b].d);
    for (int j = 0; j < EMBER_QK4_0; j++)
      out[b * EMBER_QK4_0 + j] = (float)(q4_block_get(y[b].qs, j) - 8) * d;
  }
}

// ---- Q4_1 -----------------------------------------------------------------------------------

void q4_1_from_float(const float* in, void* blocks, int64_t n) {
  check_blocks("q4_1", in, n, EMBER_QK4_1);
  auto* y = static_cast<block_q4_1*>(blocks);
  constexpr int half = EMBER_QK4_1 / 2;
  for (int64_t b = 0; b < n / EMBER_QK4_1; b++) {
    const float* x = in + b * EMBER_QK4_1;
    float vmin = x[0], vmax = x[0];
    for (int j = 1; j < EMBER_QK4_1; j++) {
      vmin = std::min(vmin, x[j]);
      vmax = std::max(vmax, x[j]);
    }
    float d = (vmax - vmin) / 15.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = scale_to_f16("q4_1", d);
    y[b].m = f32_to_f16(vmin);
    EMBER_CHECK((y[b].m & 0x7c00) != 0x7c00, Model, "[quant] q4_1: block minimum ", vmin,
                " overflows float16");
    for (int j = 0; j < half; j++) {
      int q0 = std::min(15, (int)((x[j] - vmin) * id + 0.5f));
      int q1 = std::min(15, (int)((x[j + half] - vmin) * id + 0.5f));
      y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
  }
}

void q4_1_to_float(const void* blocks, float* out, int64_t n) {
  check_blocks("q4_1", nullptr, n, EMBER_QK4_1);
  const auto* y = static_cast<const block_q4_1*>(blocks);
  for (int64_t b = 0; b < n / EMBER_QK4_1; b++) {
    float d = f16_to_f32(y[b].d), m = f16_to_f32(y[b].m);
    for (int j = 0; j < EMBER_QK4_1; j++)
      out[b * EMBER_QK4_1 + j] = (float)q4_block_get(y[b].qs, j) * d + m;
  }
}

// ---- Q4G ------------------------------------------------------------------------------------

void q4g_check(int64_t n, int64_t k, int64_t group) {
  EMBER_CHECK(n >= 0 && k > 0, Model, "[quant] q4g: invalid weight shape [", n, ", ", k, "]");
  EMBER_CHECK(group >= 32 && group % 32 == 0, Model, "[quant] q4g: group size ", group,
              " must be a positive multiple of 32");
}

void q4g_quantize(const float* w, int64_t n, int64_t k, int64_t group, bool has_zero_point,
                  uint8_t* q, float* scales, uint8_t* zp) {
  q4g_check(n, k, group);
  for (int64_t i = 0; i < n * k; i++)
    EMBER_CHECK(std::isfinite(w[i]), Model, "[quant] q4g: element ", i, " is not finite (", w[i], ")");
  const int64_t groups = q4g_groups(k, group), row_bytes = q4g_row_bytes(k, group);
  const int64_t zp_bytes = q4g_zp_row_bytes(k, group);
  for (int64_t r = 0; r < n; r++) {
    const float* x = w + r * k;
    uint8_t* qr = q + r * row_bytes;
    uint8_t* zr = has_zero_point ? zp + r * zp_bytes : nullptr;
    std::fill(qr, qr + row_bytes, 0);
    if (zr) std::fill(zr, zr + zp_bytes, 0);
    for (int64_t g = 0; g < groups; g++) {
      const int64_t k0 = g * group, k1 = std::min(k, k0 + group);
      float scale, id;
      int z;
      if (has_zero_point) {
        // The range always holds 0, so that 0 has an exact integer code.
        float vmin = 0.0f, vmax = 0.0f;
        for (int64_t j = k0; j < k1; j++) {
          vmin = std::min(vmin, x[j]);
          vmax = std::max(vmax, x[j]);
        }
        scale = (vmax - vmin) / 15.0f;
        id = scale != 0.0f ? 1.0f / scale : 0.0f;
        z = scale != 0.0f ? std::clamp((int)std::roundf(-vmin * id), 0, 15) : 8;
        zr[g >> 1] |= (uint8_t)(z << ((g & 1) * 4));
      } else {
        float amax = 0.0f, vmax = 0.0f;
        for (int64_t j = k0; j < k1; j++) {
          if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            vmax = x[j];
          }
        }
        scale = vmax / -8.0f;
        id = scale != 0.0f ? 1.0f / scale : 0.0f;
        z = 8;
      }
      scales[r * groups + g] = scale;
      for (int64_t j = k0; j < k0 + group; j++) {
        int c = z;  // padding past k decodes to 0
        if (j < k1 && has_zero_point) c = std::clamp((int)std::roundf(x[j] * id) + z, 0, 15);
        else if (j < k1) c = std::min(15, (int)(x[j] * id + 8.5f));  // as q4_0
        qr[j >> 1] |= (uint8_t)(c << ((j & 1) * 4));
      }
    }
  }
}

void q4g_dequantize(const uint8_t* q, const float* scales, const uint8_t* zp, int64_t n,
                    int64_t k, int64_t group, float* w) {
  q4g_check(n, k, group);
  const int64_t groups = q4g_groups(k, group), row_bytes = q4g_row_bytes(k, group);
  const int64_t zp_bytes = q4g_zp_row_bytes(k, group);
  for (int64_t r = 0; r < n; r++) {
    const uint8_t* qr = q + r * row_bytes;
    const uint8_t* zr = zp ? zp + r * zp_bytes : nullptr;
    for (int64_t j = 0; j < k; j++) {
      int64_t g = j / group;
      w[r * k + j] = (float)(q4g_get_q(qr, j) - q4g_get_zp(zr, g)) * scales[r * groups + g];
    }
  }
}

}  // namespace ember
