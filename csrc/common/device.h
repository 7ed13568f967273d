// What the current CUDA device offers the launchers that size their grids by it: its L2
// cache and multiprocessors (the softmax online kernels bound their grids by L2).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace seqops {

struct DeviceSize {
  int64_t l2_bytes = 0;
  int64_t multiprocessors = 0;
};

// The current device's sizes; zeros (no bound asked of any plan) if the runtime cannot say.
inline DeviceSize current_device_size() {
  int device = 0, l2 = 0, multiprocessors = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    return {};
  }
  return {l2, multiprocessors};
}

}  // namespace seqops
