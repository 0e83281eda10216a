// defines: sx::worker::onnx_model, export_onnx — a checkpoint's inference graph as an ONNX model
// (opset 11, written with worker/protobuf_writer.h; no libprotobuf / onnx library needed).
//
// Graph: input "input" (N, C, S, S) float, the image already normalised as sx_infer / the eval
// transform does it (N is dynamic, S = the checkpoint's image size); output "logits" (N, K).
// Every batch norm (eval: running statistics) is folded into the convolution before it:
//   W' = W · γ/√(σ² + ε) per output channel, b' = β − μ · γ/√(σ² + ε).
// Ops: Conv (group), Relu, MaxPool, AveragePool (vd shortcut, ceil_mode), GlobalAveragePool, SE as two
// 1x1 Conv with bias + Relu + Sigmoid + Mul, Add, Flatten, Gemm (transB). Names follow the checkpoint
// ("stage1.block0.conv2" ...). Read by OpenCV's cv::dnn (tests/test_onnx_export.cc compares logits).
#pragma once

#include <string>

#include "common/status.h"
#include "model/se_resnext.h"
#include "storage/checkpoint.h"

namespace sx::worker {

// The serialised ModelProto. bn_eps: the eps the network was trained with (model.bn_eps).
StatusOr<std::string> onnx_model(const storage::CheckpointContents& ckpt, const model::ModelSpec& spec, double bn_eps,
                                 int image_size);

// A checkpoint (dir, dir/latest or .h5) -> an .onnx file (written to a temp name, then renamed).
Status export_onnx(const std::string& checkpoint_path, const std::string& out_path);

}  // namespace sx::worker
