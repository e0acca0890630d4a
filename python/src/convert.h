// numpy <-> ember::Tensor without copies: feeds are borrowed for the duration of a call,
// outputs hand their buffer to numpy through a capsule that owns it.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>

#include "ember/tensor.h"

namespace ember::py {

namespace nb = nanobind;
// Any DLPack producer: numpy, or device tensors (torch / cupy on CUDA) where a caller allows.
using Array = nb::ndarray<nb::ro>;

// `dtype_override` ("" for none) reinterprets the array, e.g. uint16 bits as "bfloat16".
// Arrays not in host memory are an InputError unless `allow_device`.
Tensor tensor_from_array(const Array& a, const std::string& dtype_override, const std::string& what,
                         bool allow_device = false);
// A numpy array that owns (shares) the tensor's memory. bfloat16 comes back as uint16 bits.
nb::object array_from_tensor(const Tensor& t);
// A DLPack tensor (torch.from_dlpack / cupy.from_dlpack take it without a copy) over device
// memory the tensor owns; device_type is a DLPack code (1 CPU, 2 CUDA).
nb::object device_array_from_tensor(const Tensor& t, int device_type, int device_id);

}  // namespace ember::py
