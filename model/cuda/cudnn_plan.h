// defines: sx::model::cuda::Descriptor (an owned cuDNN backend descriptor) and ConvPlan — one
// convolution direction (forward, backward-data, backward-filter) planned once for one shape with the
// cuDNN graph API: operation graph -> engine heuristics -> the first execution plan that finalizes.
// N batch, C input channels, H, W, K output channels, R, S kernel, P, Q output, G groups.
#pragma once

#include <cudnn.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace sx::model::cuda {

class Descriptor {
 public:
  static StatusOr<Descriptor> make(cudnnBackendDescriptorType_t type);
  Descriptor() = default;
  ~Descriptor();
  Descriptor(Descriptor&& o) noexcept : d_(o.d_) { o.d_ = nullptr; }
  Descriptor& operator=(Descriptor&& o) noexcept;
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }
  // `what` names the attribute in the error.
  Status set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values,
             const char* what);
  Status set(cudnnBackendAttributeName_t name, const Descriptor& d, const char* what) {
    cudnnBackendDescriptor_t raw = d.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &raw, what);
  }
  Status finalize(const char* what);

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// The shape of a grouped 2-D convolution, NHWC activations, filter (K, R, S, C/G) channels-last.
struct ConvShape {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input
  int64_t k = 0, r = 1, s = 1;         // output channels, kernel
  int64_t p = 0, q = 0;                // output spatial size
  int64_t stride = 1, pad = 0, groups = 1;
  std::string to_string() const;
};

enum class ConvDirection { kForward, kBackwardData, kBackwardFilter };
const char* direction_name(ConvDirection d);

class ConvPlan {
 public:
  // io: the data type of x, w, y (and their gradients); accumulation is fp32.
  static StatusOr<ConvPlan> build(cudnnHandle_t handle, ConvDirection dir, const ConvShape& shape,
                                  cudnnDataType_t io);
  int64_t workspace_bytes() const { return workspace_bytes_; }
  // What was chosen: "engine 12 (deterministic, tensor cores)".
  const std::string& description() const { return description_; }
  // Forward: x, w read, y written. Backward-data: dy, w read, dx written. Backward-filter: x, dy read,
  // dw written. workspace: at least workspace_bytes().
  Status execute(cudnnHandle_t handle, void* x_or_dx, void* w_or_dw, void* y_or_dy, void* workspace) const;

 private:
  ConvDirection dir_ = ConvDirection::kForward;
  // Every descriptor the plan was built from stays alive with it.
  std::vector<Descriptor> parts_;
  Descriptor plan_;
  int64_t workspace_bytes_ = 0;
  std::string description_;
};

}  // namespace sx::model::cuda
