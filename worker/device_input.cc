// DeviceInput: pinned, double-buffered batch upload on a copy stream (device_input.h).
#include "worker/device_input.h"

#include <cstring>

#include "model/cuda/cuda_check.h"

namespace sx::worker {

StatusOr<std::unique_ptr<DeviceInput>> DeviceInput::create(model::Network& net, int64_t image_floats) {
  SX_CHECK_ARG(net.backend().is_device() && net.backend().native_stream() != nullptr,
               "DeviceInput needs a device backend with a compute stream");
  SX_CHECK_ARG(image_floats == net.input().dims.count(), "DeviceInput: batch size differs from the network input");
  std::unique_ptr<DeviceInput> in(new DeviceInput());
  in->net_ = &net;
  in->floats_ = image_floats;
  in->compute_ = static_cast<cudaStream_t>(net.backend().native_stream());
  SX_CUDA(cudaStreamCreateWithFlags(&in->copy_, cudaStreamNonBlocking));
  const size_t bytes = size_t(image_floats) * sizeof(float);
  for (int s = 0; s < 2; ++s) {
    SX_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&in->pinned_[s]), bytes, cudaHostAllocDefault));
    SX_CUDA(cudaMalloc(reinterpret_cast<void**>(&in->device_[s]), bytes));
    SX_CUDA(cudaEventCreateWithFlags(&in->copied_[s], cudaEventDisableTiming));
    SX_CUDA(cudaEventCreateWithFlags(&in->consumed_[s], cudaEventDisableTiming));
  }
  return in;
}

DeviceInput::~DeviceInput() {
  if (copy_) cudaStreamSynchronize(copy_);
  for (int s = 0; s < 2; ++s) {
    if (copied_[s]) cudaEventDestroy(copied_[s]);
    if (consumed_[s]) cudaEventDestroy(consumed_[s]);
    if (pinned_[s]) cudaFreeHost(pinned_[s]);
    if (device_[s]) cudaFree(device_[s]);
  }
  if (copy_) cudaStreamDestroy(copy_);
}

Status DeviceInput::set_input(const float* images) {
  const int s = next_;
  next_ ^= 1;
  const size_t bytes = size_t(floats_) * sizeof(float);
  if (used_[s]) SX_CUDA(cudaEventSynchronize(copied_[s]));  // pinned[s] is free again
  std::memcpy(pinned_[s], images, bytes);
  if (used_[s]) SX_CUDA(cudaStreamWaitEvent(copy_, consumed_[s], 0));  // device[s] was converted
  SX_CUDA(cudaMemcpyAsync(device_[s], pinned_[s], bytes, cudaMemcpyHostToDevice, copy_));
  SX_CUDA(cudaEventRecord(copied_[s], copy_));
  SX_CUDA(cudaStreamWaitEvent(compute_, copied_[s], 0));
  SX_TRY(net_->set_input(device_[s]));  // the NCHW -> NHWC conversion reads device[s] on the compute stream
  SX_CUDA(cudaEventRecord(consumed_[s], compute_));
  used_[s] = true;
  return Status::ok();
}

}  // namespace sx::worker
