// What a CUDA device offers the launchers that size their work by it, asked of the runtime
// in one place: its L2 cache and multiprocessors (the softmax online kernels bound their
// grids by L2), the shared memory a block may opt in to and whether it takes cooperative
// launches (the whole-sequence LSTM), its compute capability (the attention forward runs
// its sm90a instance on 9.0).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace seqops {

struct DeviceSize {
  int64_t l2_bytes = 0;
  int64_t multiprocessors = 0;
  int64_t max_shared_bytes = 0;  // opt-in, a block
  bool cooperative_launch = false;
  int compute_capability = 0;  // major * 10 + minor: 90 on H100/H200
};

// The sizes of `device`; `error` (if given) gets the runtime's error, and the sizes stay
// zero (no bound asked of any plan) where it cannot say.
inline DeviceSize device_size(int device, cudaError_t* error = nullptr) {
  int l2 = 0, multiprocessors = 0, max_shared = 0, cooperative = 0, major = 0, minor = 0;
  cudaError_t status = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&max_shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (error != nullptr) *error = status;
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    return {};
  }
  return {l2, multiprocessors, max_shared, cooperative != 0, major * 10 + minor};
}

// The current device's sizes (zeros where the runtime cannot say).
inline DeviceSize current_device_size(cudaError_t* error = nullptr) {
  int device = 0;
  const cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) {
    if (error != nullptr) *error = status;
    (void)cudaGetLastError();
    return {};
  }
  return device_size(device, error);
}

}  // namespace seqops
