// What a host launcher returns: success, a bad argument it refused before launching (so a
// caller's mistake never reaches the GPU as a wild pointer), or the CUDA runtime's error.
#pragma once

#include <cuda_runtime_api.h>

namespace seqops {

enum class StatusCode : int {
  ok = 0,
  bad_argument = 1,
  cuda_error = 2,
};

struct Status {
  StatusCode code = StatusCode::ok;
  const char* message = "";       // static text naming the bad argument
  cudaError_t cuda = cudaSuccess;  // set when code == cuda_error

  static Status ok() { return {}; }
  static Status bad_argument(const char* what) { return {StatusCode::bad_argument, what, cudaSuccess}; }
  static Status from_cuda(cudaError_t error) {
    return error == cudaSuccess ? Status{} : Status{StatusCode::cuda_error, "", error};
  }
  bool is_ok() const { return code == StatusCode::ok; }
};

}  // namespace seqops
