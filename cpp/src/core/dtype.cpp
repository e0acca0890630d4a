#include "ember/dtype.h"

#include "ember/error.h"

namespace ember {

namespace {
// Indexed by DType.
const DTypeInfo kDTypes[] = {
    {DType::F32, "float32", 4, true, true, false},
    {DType::F16, "float16", 2, true, true, false},
    {DType::BF16, "bfloat16", 2, true, true, false},
    {DType::F64, "float64", 8, true, true, false},
    {DType::I8, "int8", 1, false, true, false},
    {DType::U8, "uint8", 1, false, false, false},
    {DType::I16, "int16", 2, false, true, false},
    {DType::I32, "int32", 4, false, true, false},
    {DType::I64, "int64", 8, false, true, false},
    {DType::Bool, "bool", 1, false, false, false},
    {DType::Q8_0, "q8_0", 0, false, true, true},
    {DType::Q4_0, "q4_0", 0, false, true, true},
    {DType::Q4_1, "q4_1", 0, false, true, true},
    {DType::Q4G, "q4g", 0, false, true, true},
};
static_assert(sizeof(kDTypes) / sizeof(kDTypes[0]) == (size_t)DType::Count);
}  // namespace

const DTypeInfo& dtype_info(DType t) {
  EMBER_CHECK((size_t)t < (size_t)DType::Count, Internal, "[dtype] invalid dtype ", (int)t);
  return kDTypes[(size_t)t];
}

bool dtype_from_name(const std::string& name, DType* out) {
  for (const auto& d : kDTypes) {
    if (name == d.name) {
      *out = d.dtype;
      return true;
    }
  }
  return false;
}

}  // namespace ember
