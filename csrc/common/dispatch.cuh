// From a runtime dtype code to a kernel's template argument: `with_dtype(code, f)` calls
// f(T{}) with T the element type of `code` (a tag value; only its type is used).
#pragma once

#include "common/dtypes.h"

namespace seqops {

template <typename F>
void with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::float32: f(float{}); break;
    case DType::float16: f(__half{}); break;
    case DType::bfloat16: f(__nv_bfloat16{}); break;
  }
}

}  // namespace seqops
