#include "ember/tensor.h"

#include <cstdlib>
#include <cstring>

#include "ember/error.h"

namespace ember {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = (int)s.size() - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

Tensor Tensor::empty(DType dtype, const Shape& shape) {
  for (int64_t d : shape) EMBER_CHECK(d >= 0, Internal, "[tensor] negative dim in ", shape_str(shape));
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  size_t bytes = t.nbytes();
  size_t alloc = ((bytes + 63) / 64) * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) fail(ErrorKind::Input, "[tensor] out of memory allocating ", bytes, " bytes");
  t.data_ = p;
  t.owner_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  return t;
}

Tensor Tensor::zeros(DType dtype, const Shape& shape) {
  Tensor t = empty(dtype, shape);
  std::memset(t.data_, 0, t.nbytes());
  return t;
}

Tensor Tensor::borrow(DType dtype, const Shape& shape, void* data, std::shared_ptr<void> owner,
                      Shape strides) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = strides.empty() ? contiguous_strides(shape) : std::move(strides);
  t.data_ = data;
  t.owner_ = std::move(owner);
  return t;
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int i = rank() - 1; i >= 0; i--) {
    if (shape_[i] != 1 && strides_[i] != acc) return false;
    acc *= shape_[i];
  }
  return true;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  Tensor out = empty(dtype_, shape_);
  size_t es = dtype_size(dtype_);
  int64_t n = numel();
  std::vector<int64_t> idx(rank(), 0);
  const char* src = static_cast<const char*>(data_);
  char* dst = static_cast<char*>(out.data_);
  for (int64_t i = 0; i < n; i++) {
    int64_t off = 0;
    for (int d = 0; d < rank(); d++) off += idx[d] * strides_[d];
    std::memcpy(dst + i * es, src + off * (int64_t)es, es);
    for (int d = rank() - 1; d >= 0; d--) {
      if (++idx[d] < shape_[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

Tensor Tensor::reshaped(const Shape& shape) const {
  EMBER_CHECK(shape_numel(shape) == numel() && is_contiguous(), Internal,
              "[tensor] cannot view ", shape_str(shape_), " as ", shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor src = contiguous();
  Tensor out = empty(dtype_, shape_);
  if (nbytes()) std::memcpy(out.data_, src.data_, nbytes());
  return out;
}

double tensor_get_f64(const Tensor& t, int64_t i) {
  const void* p = t.data();
  switch (t.dtype()) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::I8: return static_cast<const int8_t*>(p)[i];
    case DType::U8: return static_cast<const uint8_t*>(p)[i];
    case DType::I16: return static_cast<const int16_t*>(p)[i];
    case DType::I32: return static_cast<const int32_t*>(p)[i];
    case DType::I64: return (double)static_cast<const int64_t*>(p)[i];
    case DType::Bool: return static_cast<const uint8_t*>(p)[i] ? 1.0 : 0.0;
    default: fail(ErrorKind::Internal, "[tensor] cannot read ", dtype_name(t.dtype()));
  }
}

int64_t tensor_get_i64(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::I64: return static_cast<const int64_t*>(t.data())[i];
    case DType::I32: return static_cast<const int32_t*>(t.data())[i];
    default: return (int64_t)tensor_get_f64(t, i);
  }
}

std::vector<int64_t> tensor_to_i64_vector(const Tensor& t) {
  std::vector<int64_t> v((size_t)t.numel());
  for (int64_t i = 0; i < t.numel(); i++) v[i] = tensor_get_i64(t, i);
  return v;
}

}  // namespace ember
