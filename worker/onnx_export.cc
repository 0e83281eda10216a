// Checkpoint -> ONNX inference graph. The onnx.proto fields written (ONNX IR, proto2):
//   ModelProto        ir_version 1, producer_name 2, producer_version 3, graph 7, opset_import 8
//   OperatorSetIdProto domain 1, version 2
//   GraphProto        node 1, name 2, initializer 5, input 11, output 12
//   NodeProto         input 1, output 2, name 3, op_type 4, attribute 5
//   AttributeProto    name 1, i 3, ints 8, type 20 (INT = 2, INTS = 7)
//   TensorProto       dims 1, data_type 2 (FLOAT = 1), name 8, raw_data 9 (little-endian)
//   ValueInfoProto    name 1, type 2;  TypeProto tensor_type 1;  TypeProto.Tensor elem_type 1, shape 2
//   TensorShapeProto  dim 1;  Dimension dim_value 1, dim_param 2
#include "worker/onnx_export.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "dataplane/prep_files.h"
#include "worker/config.h"
#include "worker/protobuf_writer.h"
#include "worker/torch_convert.h"

namespace sx::worker {
namespace {

static_assert(std::endian::native == std::endian::little, "raw_data is written in host byte order");

constexpr int64_t kIrVersion = 6;  // ONNX IR of opset 11
constexpr int64_t kOpset = 11;

struct Attr {
  std::string name;
  std::vector<int64_t> values;
  bool list = true;  // INTS, else INT (values[0])
};

class GraphBuilder {
 public:
  GraphBuilder(const storage::CheckpointContents& ckpt, double eps) : eps_(eps) {
    for (const storage::OwnedTensor& t : ckpt.tensors) by_name_[t.name] = &t;
  }

  bool has(const std::string& name) const { return by_name_.count(name) != 0; }

  StatusOr<const storage::OwnedTensor*> tensor(const std::string& name, size_t rank) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return Status::data_loss("the checkpoint has no " + name);
    if (it->second->shape.size() != rank)
      return Status::data_loss(name + " has " + std::to_string(it->second->shape.size()) + " dimensions, expected " +
                               std::to_string(rank));
    return it->second;
  }

  void node(const std::string& op, const std::string& name, const std::vector<std::string>& in,
            const std::string& out, const std::vector<Attr>& attrs = {}) {
    ProtoWriter n;
    for (const std::string& i : in) n.bytes_field(1, i);
    n.bytes_field(2, out);
    n.bytes_field(3, name);
    n.bytes_field(4, op);
    for (const Attr& a : attrs) {
      ProtoWriter w;
      w.bytes_field(1, a.name);
      if (a.list) {
        for (int64_t v : a.values) w.int_field(8, v);
        w.int_field(20, 7);
      } else {
        w.int_field(3, a.values.at(0));
        w.int_field(20, 2);
      }
      n.message_field(5, w);
    }
    graph_.message_field(1, n);
  }

  void initializer(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& data) {
    ProtoWriter t;
    for (int64_t d : dims) t.int_field(1, d);
    t.int_field(2, 1);  // FLOAT
    t.bytes_field(8, name);
    t.bytes_field(9, std::string_view(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float)));
    graph_.message_field(5, t);
  }

  // conv (no bias) followed by its BN, folded; then an optional ReLU. Returns the output's name.
  StatusOr<std::string> conv_bn(const std::string& x, const std::string& conv, const std::string& bn, int stride,
                                int pad, int groups, bool relu) {
    SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* w, tensor("params/" + conv + ".weight", 4));
    SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* gamma, tensor("params/" + bn + ".weight", 1));
    SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* beta, tensor("params/" + bn + ".bias", 1));
    SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* mean, tensor("bn_stats/" + bn + ".running_mean", 1));
    SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* var, tensor("bn_stats/" + bn + ".running_var", 1));
    const int64_t oc = w->shape[0], per_oc = w->shape[1] * w->shape[2] * w->shape[3];
    for (const storage::OwnedTensor* t : {gamma, beta, mean, var})
      if (t->shape[0] != oc)
        return Status::data_loss(t->name + " has " + std::to_string(t->shape[0]) + " channels, " + conv + " has " +
                                 std::to_string(oc));
    std::vector<float> wf(w->data.size()), bf(static_cast<size_t>(oc));
    for (int64_t o = 0; o < oc; ++o) {
      const double scale = double(gamma->data[size_t(o)]) / std::sqrt(double(var->data[size_t(o)]) + eps_);
      for (int64_t i = 0; i < per_oc; ++i)
        wf[size_t(o * per_oc + i)] = float(double(w->data[size_t(o * per_oc + i)]) * scale);
      bf[size_t(o)] = float(double(beta->data[size_t(o)]) - double(mean->data[size_t(o)]) * scale);
    }
    initializer(conv + ".weight", w->shape, wf);
    initializer(conv + ".bias", {oc}, bf);
    const int64_t k = w->shape[2];
    node("Conv", conv, {x, conv + ".weight", conv + ".bias"}, conv,
         {{"kernel_shape", {k, w->shape[3]}},
          {"strides", {stride, stride}},
          {"pads", {pad, pad, pad, pad}},
          {"group", {groups}, false}});
    if (!relu) return conv;
    node("Relu", conv + ".relu", {conv}, conv + ".relu");
    return conv + ".relu";
  }

  // A linear layer as a 1x1 convolution with bias (the SE excitation on (N, C, 1, 1)).
  StatusOr<std::string> conv1x1_bias(const std::string& x, const std::string& name) {
    SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* w, tensor("params/" + name + ".weight", 2));
    SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* b, tensor("params/" + name + ".bias", 1));
    initializer(name + ".weight", {w->shape[0], w->shape[1], 1, 1}, w->data);
    initializer(name + ".bias", b->shape, b->data);
    node("Conv", name, {x, name + ".weight", name + ".bias"}, name, {{"kernel_shape", {1, 1}}});
    return name;
  }

  void value_info(int field, const std::string& name, const std::vector<int64_t>& dims) {
    ProtoWriter shape;
    for (int64_t d : dims) {
      ProtoWriter dim;
      if (d < 0) dim.bytes_field(2, "N");
      else dim.int_field(1, d);
      shape.message_field(1, dim);
    }
    ProtoWriter tensor_type, type, vi;
    tensor_type.int_field(1, 1);  // FLOAT
    tensor_type.message_field(2, shape);
    type.message_field(1, tensor_type);
    vi.bytes_field(1, name);
    vi.message_field(2, type);
    graph_.message_field(field, vi);
  }

  ProtoWriter& graph() { return graph_; }

 private:
  double eps_;
  std::map<std::string, const storage::OwnedTensor*> by_name_;
  ProtoWriter graph_;
};

StatusOr<std::string> block(GraphBuilder& g, const model::ModelSpec& spec, const std::string& x, int s, int b,
                            int in_channels) {
  const std::string name = "stage" + std::to_string(s) + ".block" + std::to_string(b);
  const int stride = b == 0 ? spec.stride(s) : 1, out = spec.out_channels(s);
  SX_ASSIGN_OR_RETURN(std::string y, g.conv_bn(x, name + ".conv1", name + ".bn1", 1, 0, 1, true));
  SX_ASSIGN_OR_RETURN(y, g.conv_bn(y, name + ".conv2", name + ".bn2", stride, 1, spec.cardinality, true));
  SX_ASSIGN_OR_RETURN(y, g.conv_bn(y, name + ".conv3", name + ".bn3", 1, 0, 1, false));
  if (spec.se_channels(s) > 0) {
    g.node("GlobalAveragePool", name + ".se.pool", {y}, name + ".se.pool");
    SX_ASSIGN_OR_RETURN(std::string h, g.conv1x1_bias(name + ".se.pool", name + ".se.fc1"));
    g.node("Relu", name + ".se.relu", {h}, name + ".se.relu");
    SX_ASSIGN_OR_RETURN(h, g.conv1x1_bias(name + ".se.relu", name + ".se.fc2"));
    g.node("Sigmoid", name + ".se.sigmoid", {h}, name + ".se.sigmoid");
    g.node("Mul", name + ".se.scale", {y, name + ".se.sigmoid"}, name + ".se.scale");
    y = name + ".se.scale";
  }
  std::string shortcut = x;
  if (stride != 1 || in_channels != out) {
    std::string in = x;
    int down_stride = stride;
    if (spec.avg_down && stride != 1) {
      g.node("AveragePool", name + ".downsample.pool", {x}, name + ".downsample.pool",
             {{"kernel_shape", {2, 2}}, {"strides", {2, 2}}, {"ceil_mode", {1}, false}});
      in = name + ".downsample.pool";
      down_stride = 1;
    }
    SX_ASSIGN_OR_RETURN(shortcut, g.conv_bn(in, name + ".downsample.conv", name + ".downsample.bn", down_stride, 0, 1,
                                            false));
  } else if (g.has("params/" + name + ".downsample.conv.weight")) {
    return Status::data_loss(name + " has a projection shortcut the architecture " + spec.name + " does not have");
  }
  g.node("Add", name + ".add", {y, shortcut}, name + ".add");
  g.node("Relu", name + ".out", {name + ".add"}, name + ".out");
  return name + ".out";
}

}  // namespace

StatusOr<std::string> onnx_model(const storage::CheckpointContents& ckpt, const model::ModelSpec& spec, double bn_eps,
                                 int image_size) {
  SX_TRY(spec.validate());
  GraphBuilder g(ckpt, bn_eps);
  g.graph().bytes_field(2, spec.name);
  std::string x = "input";
  switch (spec.stem) {
    case model::Stem::kImageNet: {
      SX_ASSIGN_OR_RETURN(x, g.conv_bn(x, "stem.conv1", "stem.bn1", 2, 3, 1, true));
      break;
    }
    case model::Stem::kVd: {
      SX_ASSIGN_OR_RETURN(x, g.conv_bn(x, "stem.conv1", "stem.bn1", 2, 1, 1, true));
      SX_ASSIGN_OR_RETURN(x, g.conv_bn(x, "stem.conv2", "stem.bn2", 1, 1, 1, true));
      SX_ASSIGN_OR_RETURN(x, g.conv_bn(x, "stem.conv3", "stem.bn3", 1, 1, 1, true));
      break;
    }
    case model::Stem::kSmall: {
      SX_ASSIGN_OR_RETURN(x, g.conv_bn(x, "stem.conv1", "stem.bn1", 1, 1, 1, true));
      break;
    }
  }
  if (spec.stem != model::Stem::kSmall) {
    g.node("MaxPool", "stem.pool", {x}, "stem.pool",
           {{"kernel_shape", {3, 3}}, {"strides", {2, 2}}, {"pads", {1, 1, 1, 1}}});
    x = "stem.pool";
  }
  int channels = spec.stem_channels;
  for (int s = 0; s < spec.stage_count(); ++s)
    for (int b = 0; b < spec.blocks[size_t(s)]; ++b) {
      SX_ASSIGN_OR_RETURN(x, block(g, spec, x, s, b, channels));
      channels = spec.out_channels(s);
    }
  g.node("GlobalAveragePool", "pool", {x}, "pool");
  g.node("Flatten", "flatten", {"pool"}, "flatten", {{"axis", {1}, false}});
  SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* fc_w, g.tensor("params/fc.weight", 2));
  SX_ASSIGN_OR_RETURN(const storage::OwnedTensor* fc_b, g.tensor("params/fc.bias", 1));
  g.initializer("fc.weight", fc_w->shape, fc_w->data);
  g.initializer("fc.bias", fc_b->shape, fc_b->data);
  g.node("Gemm", "fc", {"flatten", "fc.weight", "fc.bias"}, "logits", {{"transB", {1}, false}});
  g.value_info(11, "input", {-1, spec.in_channels, image_size, image_size});
  g.value_info(12, "logits", {-1, spec.num_classes});

  ProtoWriter opset, model;
  opset.int_field(2, kOpset);
  model.int_field(1, kIrVersion);
  model.bytes_field(2, "sxtrain");
  model.bytes_field(3, "1");
  model.message_field(7, g.graph());
  model.message_field(8, opset);
  return model.bytes();
}

Status export_onnx(const std::string& checkpoint_path, const std::string& out_path) {
  SX_ASSIGN_OR_RETURN(storage::CheckpointContents ckpt, storage::read_checkpoint(checkpoint_path));
  auto spec = checkpoint_model_spec(ckpt);
  if (!spec.is_ok()) return spec.status().with_context(checkpoint_path);
  double eps = 1e-5;
  int image_size = spec->stem == model::Stem::kSmall ? 28 : 224;
  if (!ckpt.meta.config_text.empty()) {
    auto config = parse_job_config(ckpt.meta.config_text, checkpoint_path + " (config_text)", {"mode=eval", "data.val=-"});
    if (!config.is_ok()) return config.status();
    eps = config->model.bn_eps;
    if (config->model.image_size > 0) image_size = config->model.image_size;
  }
  auto extra = nlohmann::json::parse(ckpt.meta.extra_json, nullptr, false);
  if (!extra.is_discarded() && extra.contains("image_size") && extra["image_size"].is_number_integer())
    image_size = extra["image_size"].get<int>();
  auto bytes = onnx_model(ckpt, *spec, eps, image_size);
  if (!bytes.is_ok()) return bytes.status().with_context(checkpoint_path);
  return dataplane::write_file_atomic(out_path, *bytes);
}

}  // namespace sx::worker
