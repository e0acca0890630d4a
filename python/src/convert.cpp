#include "convert.h"

#include "ember/error.h"

namespace ember::py {

namespace {

DType dtype_from_dlpack(nb::dlpack::dtype dt, const std::string& what) {
  using Code = nb::dlpack::dtype_code;
  if (dt.lanes == 1) {
    switch ((Code)dt.code) {
      case Code::Float:
        if (dt.bits == 32) return DType::F32;
        if (dt.bits == 16) return DType::F16;
        if (dt.bits == 64) return DType::F64;
        break;
      case Code::Bfloat:
        if (dt.bits == 16) return DType::BF16;
        break;
      case Code::Int:
        if (dt.bits == 8) return DType::I8;
        if (dt.bits == 16) return DType::I16;
        if (dt.bits == 32) return DType::I32;
        if (dt.bits == 64) return DType::I64;
        break;
      case Code::UInt:
        if (dt.bits == 8) return DType::U8;
        break;
      case Code::Bool:
        if (dt.bits == 8) return DType::Bool;
        break;
      default: break;
    }
  }
  fail(ErrorKind::Input, "[run] ", what, ": unsupported array dtype (code ", (int)dt.code,
       ", ", (int)dt.bits, " bits)");
}

nb::dlpack::dtype dlpack_from_dtype(DType t) {
  using Code = nb::dlpack::dtype_code;
  auto mk = [](Code c, int bits) { return nb::dlpack::dtype{(uint8_t)c, (uint8_t)bits, 1}; };
  switch (t) {
    case DType::F32: return mk(Code::Float, 32);
    case DType::F16: return mk(Code::Float, 16);
    case DType::BF16: return mk(Code::UInt, 16);  // numpy has no bfloat16: raw bits
    case DType::F64: return mk(Code::Float, 64);
    case DType::I8: return mk(Code::Int, 8);
    case DType::U8: return mk(Code::UInt, 8);
    case DType::I16: return mk(Code::Int, 16);
    case DType::I32: return mk(Code::Int, 32);
    case DType::I64: return mk(Code::Int, 64);
    case DType::Bool: return mk(Code::Bool, 8);
    default: fail(ErrorKind::Internal, "[convert] cannot export ", dtype_name(t));
  }
}

}  // namespace

Tensor tensor_from_array(const Array& a, const std::string& dtype_override, const std::string& what,
                         bool allow_device) {
  EMBER_CHECK(allow_device || a.device_type() == nb::device::cpu::value, Input, "[run] ", what,
              ": an array in device memory (DLPack device ", a.device_type(), ") where host memory is needed");
  DType dtype;
  if (!dtype_override.empty()) {
    EMBER_CHECK(dtype_from_name(dtype_override, &dtype), Input, "[run] ", what,
                ": unknown dtype '", dtype_override, "'");
    EMBER_CHECK(dtype_size(dtype) * 8 == a.dtype().bits, Input, "[run] ", what, ": cannot view ",
                (int)a.dtype().bits, "-bit data as ", dtype_override);
  } else {
    dtype = dtype_from_dlpack(a.dtype(), what);
  }
  Shape shape(a.ndim()), strides(a.ndim());
  for (size_t i = 0; i < a.ndim(); i++) {
    shape[i] = (int64_t)a.shape(i);
    strides[i] = (int64_t)a.stride(i);
  }
  return Tensor::borrow(dtype, shape, const_cast<void*>(a.data()), nullptr, strides);
}

nb::object array_from_tensor(const Tensor& t) {
  auto* holder = new Tensor(t);
  nb::capsule owner(holder, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  std::vector<size_t> shape(t.shape().begin(), t.shape().end());
  nb::ndarray<nb::numpy> arr(t.data(), shape.size(), shape.data(), owner, nullptr,
                             dlpack_from_dtype(t.dtype()));
  return nb::cast(arr, nb::rv_policy::reference);
}

nb::object device_array_from_tensor(const Tensor& t, int device_type, int device_id) {
  auto* holder = new Tensor(t);
  nb::capsule owner(holder, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  std::vector<size_t> shape(t.shape().begin(), t.shape().end());
  // DLPack consumers of device memory (torch, cupy) know bfloat16; numpy does not.
  nb::dlpack::dtype dt = t.dtype() == DType::BF16
                             ? nb::dlpack::dtype{(uint8_t)nb::dlpack::dtype_code::Bfloat, 16, 1}
                             : dlpack_from_dtype(t.dtype());
  nb::ndarray<nb::array_api> arr(t.data(), shape.size(), shape.data(), owner, nullptr, dt,
                                 device_type, device_id);
  return nb::cast(arr, nb::rv_policy::reference);
}

}  // namespace ember::py
