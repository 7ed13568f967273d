// Host launchers of the softmax kernels: check the params, pick the kernel by row length
// (plan.h) and the dtypes, launch on `stream`. No torch, no Python.
#pragma once

#include <cuda_runtime_api.h>

#include "common/status.h"
#include "softmax/params.h"

namespace seqops {

// The params' own checks (pointers, dtype codes, sizes), which touch no GPU; the launchers
// run them first too.
Status check_softmax_forward(const SoftmaxForwardParams& params);
Status check_softmax_backward(const SoftmaxBackwardParams& params);

Status softmax_forward(const SoftmaxForwardParams& params, cudaStream_t stream);
Status softmax_backward(const SoftmaxBackwardParams& params, cudaStream_t stream);

}  // namespace seqops
