// numpy <-> ember::Tensor without copies: feeds are borrowed for the duration of a call,
// outputs hand their buffer to numpy through a capsule that owns it.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <string>

#include "ember/tensor.h"

namespace ember::py {

namespace nb = nanobind;
using Array = nb::ndarray<nb::ro, nb::device::cpu>;

// `dtype_override` ("" for none) reinterprets the array, e.g. uint16 bits as "bfloat16".
Tensor tensor_from_array(const Array& a, const std::string& dtype_override, const std::string& what);
// A numpy array that owns (shares) the tensor's memory. bfloat16 comes back as uint16 bits.
nb::object array_from_tensor(const Tensor& t);

}  // namespace ember::py
