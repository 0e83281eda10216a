// defines: sx::worker::DeviceInput — the data plane's last hop on a GPU: a batch's images go from
// the reader's (pageable) memory into one of two pinned host buffers, then to device memory on a
// copy stream of their own, double-buffered, so the upload of batch t+1 overlaps the compute of
// batch t. Compiled only with SX_CUDA (device_input.cc); users test SX_HAVE_CUDA.
//
// Ordering, per slot s = t mod 2 (all by CUDA events, nothing polls):
//   host:        waits for slot s's previous upload (copied[s]) before overwriting pinned[s];
//   copy stream: waits for consumed[s] (the compute stream has converted slot s's previous batch),
//                copies pinned[s] -> device[s], records copied[s];
//   compute:     waits for copied[s], converts device[s] into the network input (upload_nchw on
//                device memory), records consumed[s].
#pragma once

#if SX_HAVE_CUDA

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "model/network.h"

namespace sx::worker {

class DeviceInput {
 public:
  // image_floats: floats of one batch of images (N·C·H·W), the size every stage() call copies.
  static StatusOr<std::unique_ptr<DeviceInput>> create(model::Network& net, int64_t image_floats);
  ~DeviceInput();
  DeviceInput(const DeviceInput&) = delete;
  DeviceInput& operator=(const DeviceInput&) = delete;

  // Uploads images (host, NCHW fp32) through the next slot and sets them as the network's input,
  // ordered on the compute stream; returns without waiting for the copy or the conversion.
  Status set_input(const float* images);

 private:
  DeviceInput() = default;
  model::Network* net_ = nullptr;
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  int64_t floats_ = 0;
  float* pinned_[2] = {nullptr, nullptr};
  float* device_[2] = {nullptr, nullptr};
  cudaEvent_t copied_[2] = {nullptr, nullptr}, consumed_[2] = {nullptr, nullptr};
  bool used_[2] = {false, false};
  int next_ = 0;
};

}  // namespace sx::worker

#endif  // SX_HAVE_CUDA
