// layer_costs: the SE-ResNeXt walk of se_resnext.cc with a name, FLOPs and bytes per layer.
#include "model/cost_model.h"

#include <algorithm>

namespace sx::model {

const char* cost_kind_name(CostKind kind) {
  switch (kind) {
    case CostKind::kConv: return "conv";
    case CostKind::kLinear: return "linear";
    case CostKind::kBatchNorm: return "bn";
    case CostKind::kPool: return "pool";
    case CostKind::kSeMerge: return "se_merge";
    case CostKind::kSgd: return "sgd";
  }
  return "?";
}

namespace {

struct CostWalker {
  const ModelSpec& spec;
  int h, w, batch, e;  // e: bytes per activation element
  std::vector<LayerCost> out;
  int64_t params = 0;

  static int conv_out(int x, int k, int s, int p) { return (x + 2 * p - k) / s + 1; }
  double per_image(double weight_bytes) const { return weight_bytes / double(batch); }

  // Forward reads x and w, writes y; backward-data reads dy and w, writes dx; backward-filter reads x
  // and dy, writes dw (fp32). The stem's first conv has no dx.
  void conv(const std::string& name, int c, int oc, int k, int stride, int pad, int groups, bool want_dx = true) {
    const int64_t in = int64_t(c) * h * w;
    h = conv_out(h, k, stride, pad);
    w = conv_out(w, k, stride, pad);
    const int64_t o = int64_t(oc) * h * w;
    const int64_t weights = int64_t(oc) * (c / groups) * k * k;
    const int64_t macs = weights * h * w;
    params += weights;
    LayerCost l{name, CostKind::kConv, macs, 0, 0, o};
    l.flops = 2.0 * double(macs) * (want_dx ? 3 : 2);
    const double act = double(e) * (2.0 * double(in) + 2.0 * double(o) + (want_dx ? double(in) + double(o) : 0));
    // fp32 weights read + converted once, read again by backward-data, dw written (fp32).
    l.bytes = act + per_image(double(weights) * (4.0 + 2.0 * e + 4.0));
    out.push_back(l);
  }
  // Forward: statistics pass (read x), apply (read x, write y); backward: sums (read x, dy), dx
  // (read x, dy, write dx). ReLU fused. ~10 flops per element over both directions.
  void bn(const std::string& name, int c) {
    params += 2 * int64_t(c);
    const int64_t n = int64_t(c) * h * w;
    out.push_back({name, CostKind::kBatchNorm, 0, 10.0 * double(n), double(e) * 8.0 * double(n), n});
  }
  // SE: global pool of the branch (read), two small linears, sigmoid, the merge relu(x·s + shortcut)
  // (read 2, write 1); backward: merge (read dout, out, x, write dshortcut), scale (read dz, write dx).
  void se_merge(const std::string& name, int c, int r) {
    const int64_t n = int64_t(c) * h * w;
    int64_t macs = 0;
    if (r > 0) {
      macs = 2 * int64_t(c) * r;
      params += 2 * int64_t(c) * r + r + c;
    }
    LayerCost l{name, CostKind::kSeMerge, macs, 6.0 * double(macs) + 8.0 * double(n), 0, n};
    l.bytes = double(e) * double(n) * (r > 0 ? 1 + 3 + 4 + 2 : 3 + 3) + per_image(r > 0 ? 4.0 * 4 * c * r : 0);
    out.push_back(l);
  }
  void max_pool(const std::string& name, int c) {
    const int64_t in = int64_t(c) * h * w;
    h = conv_out(h, 3, 2, 1);
    w = conv_out(w, 3, 2, 1);
    const int64_t o = int64_t(c) * h * w;
    out.push_back({name, CostKind::kPool, 0, 9.0 * double(o) * 2, double(e) * (in + o + o + in), o});
  }
  void linear(const std::string& name, int in, int n_out) {
    params += int64_t(in) * n_out + n_out;
    const int64_t macs = int64_t(in) * n_out;
    LayerCost l{name, CostKind::kLinear, macs, 6.0 * double(macs), 0, n_out};
    l.bytes = 4.0 * (3.0 * in + 3.0 * n_out) + per_image(4.0 * 3.0 * double(macs));
    out.push_back(l);
  }

  void run() {
    int c = spec.in_channels;
    switch (spec.stem) {
      case Stem::kImageNet:
        conv("stem.conv1", c, spec.stem_channels, 7, 2, 3, 1, false), bn("stem.bn1", spec.stem_channels);
        max_pool("stem.pool", spec.stem_channels);
        break;
      case Stem::kVd: {
        const int half = spec.stem_channels / 2;
        conv("stem.conv1", c, half, 3, 2, 1, 1, false), bn("stem.bn1", half);
        conv("stem.conv2", half, half, 3, 1, 1, 1), bn("stem.bn2", half);
        conv("stem.conv3", half, spec.stem_channels, 3, 1, 1, 1), bn("stem.bn3", spec.stem_channels);
        max_pool("stem.pool", spec.stem_channels);
        break;
      }
      case Stem::kSmall:
        conv("stem.conv1", c, spec.stem_channels, 3, 1, 1, 1, false), bn("stem.bn1", spec.stem_channels);
        break;
    }
    c = spec.stem_channels;
    for (int s = 0; s < spec.stage_count(); ++s) {
      for (int b = 0; b < spec.blocks[size_t(s)]; ++b) {
        const std::string p = "stage" + std::to_string(s) + ".block" + std::to_string(b) + ".";
        const int stride = b == 0 ? spec.stride(s) : 1;
        const int width = spec.width(s), o = spec.out_channels(s);
        const int in_h = h, in_w = w;
        conv(p + "conv1", c, width, 1, 1, 0, 1), bn(p + "bn1", width);
        conv(p + "conv2", width, width, 3, stride, 1, spec.cardinality), bn(p + "bn2", width);
        conv(p + "conv3", width, o, 1, 1, 0, 1), bn(p + "bn3", o);
        const int out_h = h, out_w = w;
        if (stride != 1 || c != o) {
          h = in_h, w = in_w;
          if (spec.avg_down && stride != 1) {
            h = (h + 1) / 2, w = (w + 1) / 2;
            conv(p + "downsample.conv", c, o, 1, 1, 0, 1);
          } else {
            conv(p + "downsample.conv", c, o, 1, stride, 0, 1);
          }
          bn(p + "downsample.bn", o);
          h = out_h, w = out_w;
        }
        se_merge(p + (spec.se_reduction > 0 ? "se+merge" : "merge"), o, spec.se_channels(s));
        c = o;
      }
    }
    linear("fc", c, spec.num_classes);
    // SGD with momentum over fp32 flat buffers: read w, g, v; write w, v.
    out.push_back({"sgd", CostKind::kSgd, 0, per_image(4.0 * double(params)), per_image(20.0 * double(params)), 0});
  }
};

}  // namespace

std::vector<LayerCost> layer_costs(const ModelSpec& spec, int image_h, int image_w, int batch, int act_bytes) {
  CostWalker walker{spec, image_h, image_w, std::max(batch, 1), act_bytes, {}, 0};
  walker.run();
  return std::move(walker.out);
}

CostTotals sum_costs(const std::vector<LayerCost>& layers) {
  CostTotals t;
  for (const LayerCost& l : layers) {
    t.macs += l.macs;
    t.flops += l.flops;
    t.bytes += l.bytes;
    if (l.kind == CostKind::kConv || l.kind == CostKind::kLinear) {
      t.conv_flops += l.flops;
      t.conv_bytes += l.bytes;
    }
  }
  return t;
}

double roofline_seconds(const std::vector<LayerCost>& layers, double peak_flops, double vector_flops,
                        double bandwidth) {
  double s = 0;
  for (const LayerCost& l : layers) {
    const bool gemm = l.kind == CostKind::kConv || l.kind == CostKind::kLinear;
    s += std::max(l.flops / (gemm ? peak_flops : vector_flops), l.bytes / bandwidth);
  }
  return s;
}

}  // namespace sx::model
