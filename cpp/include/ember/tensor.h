// Tensor: dtype, shape, strides (in elements) and a data pointer that is either owned (a
// shared buffer) or borrowed (numpy memory kept alive by the caller). Kernels see contiguous
// tensors only; the session makes strided feeds contiguous before a run.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ember/dtype.h"

namespace ember {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);
Shape contiguous_strides(const Shape& s);

class Tensor {
 public:
  Tensor() = default;
  // Owned, 64-byte aligned, uninitialised memory.
  static Tensor empty(DType dtype, const Shape& shape);
  static Tensor zeros(DType dtype, const Shape& shape);
  // Borrowed memory; `owner` (may be null) keeps it alive. Empty strides mean contiguous.
  static Tensor borrow(DType dtype, const Shape& shape, void* data,
                       std::shared_ptr<void> owner = nullptr, Shape strides = {});

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int rank() const { return (int)shape_.size(); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return (size_t)numel() * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr || (dtype_ != DType::Count && numel() == 0); }
  bool is_contiguous() const;

  void* data() const { return data_; }
  template <class T>
  T* ptr() const { return static_cast<T*>(data_); }
  const std::shared_ptr<void>& owner() const { return owner_; }

  // A contiguous copy (or this tensor, when already contiguous).
  Tensor contiguous() const;
  // Same memory, new shape; numel must match and the tensor must be contiguous.
  Tensor reshaped(const Shape& shape) const;
  Tensor clone() const;

 private:
  DType dtype_ = DType::Count;
  Shape shape_;
  Shape strides_;
  void* data_ = nullptr;
  std::shared_ptr<void> owner_;
};

// Reads element i of a contiguous numeric tensor as double / int64 (shape maths, tests).
double tensor_get_f64(const Tensor& t, int64_t i);
int64_t tensor_get_i64(const Tensor& t, int64_t i);
std::vector<int64_t> tensor_to_i64_vector(const Tensor& t);

}  // namespace ember
