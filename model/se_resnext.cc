// ModelSpec rules, the named presets and the parameter / multiply-add counts of the SE-ResNeXt family.
#include "model/se_resnext.h"

#include <algorithm>

namespace sx::model {

int ModelSpec::width(int stage) const { return cardinality * base_width * (1 << stage); }

int ModelSpec::out_channels(int stage) const {
  return stage_channels.empty() ? 256 * (1 << stage) : stage_channels[size_t(stage)];
}

int ModelSpec::stride(int stage) const {
  if (!stage_strides.empty()) return stage_strides[size_t(stage)];
  return stage == 0 ? 1 : 2;
}

int ModelSpec::se_channels(int stage) const { return se_reduction > 0 ? out_channels(stage) / se_reduction : 0; }

namespace {
Status bad(const std::string& field, const std::string& what) {
  return Status::invalid_argument("ModelSpec." + field + " " + what);
}
std::string at(const char* field, size_t i) { return std::string(field) + "[" + std::to_string(i) + "]"; }
}  // namespace

Status ModelSpec::validate() const {
  if (blocks.empty()) return bad("blocks", "is empty: need at least one stage");
  if (blocks.size() > 8) return bad("blocks", "has " + std::to_string(blocks.size()) + " stages: at most 8");
  for (size_t i = 0; i < blocks.size(); ++i)
    if (blocks[i] < 1) return bad(at("blocks", i), "= " + std::to_string(blocks[i]) + ": must be >= 1");
  if (cardinality < 1) return bad("cardinality", "= " + std::to_string(cardinality) + ": must be >= 1");
  if (base_width < 1) return bad("base_width", "= " + std::to_string(base_width) + ": must be >= 1");
  if (!stage_channels.empty() && stage_channels.size() != blocks.size())
    return bad("stage_channels", "has " + std::to_string(stage_channels.size()) + " entries but blocks has " +
                                     std::to_string(blocks.size()) + " (or leave it empty for 256*2^s)");
  for (size_t i = 0; i < stage_channels.size(); ++i)
    if (stage_channels[i] < 1)
      return bad(at("stage_channels", i), "= " + std::to_string(stage_channels[i]) + ": must be >= 1");
  if (!stage_strides.empty() && stage_strides.size() != blocks.size())
    return bad("stage_strides", "has " + std::to_string(stage_strides.size()) + " entries but blocks has " +
                                    std::to_string(blocks.size()) + " (or leave it empty for 1, 2, 2, ...)");
  for (size_t i = 0; i < stage_strides.size(); ++i)
    if (stage_strides[i] != 1 && stage_strides[i] != 2)
      return bad(at("stage_strides", i), "= " + std::to_string(stage_strides[i]) + ": must be 1 or 2");
  if (se_reduction < 0) return bad("se_reduction", "= " + std::to_string(se_reduction) + ": must be >= 0 (0 = no SE)");
  for (int s = 0; s < stage_count(); ++s)
    if (se_reduction > 0 && out_channels(s) / se_reduction < 1)
      return bad("se_reduction", "= " + std::to_string(se_reduction) + " leaves no channels in the SE bottleneck of stage " +
                                     std::to_string(s) + " (" + std::to_string(out_channels(s)) + " channels)");
  if (stem_channels < 1) return bad("stem_channels", "= " + std::to_string(stem_channels) + ": must be >= 1");
  if (stem == Stem::kVd && stem_channels % 2 != 0)
    return bad("stem_channels", "= " + std::to_string(stem_channels) + ": the vd stem needs an even count");
  if (in_channels < 1) return bad("in_channels", "= " + std::to_string(in_channels) + ": must be >= 1");
  if (num_classes < 1) return bad("num_classes", "= " + std::to_string(num_classes) + ": must be >= 1");
  return Status::ok();
}

namespace {
ModelSpec family(std::string name, std::vector<int> blocks, int se_reduction, bool vd) {
  ModelSpec s;
  s.name = std::move(name);
  s.blocks = std::move(blocks);
  s.se_reduction = se_reduction;
  if (vd) {
    s.stem = Stem::kVd;
    s.avg_down = true;
  }
  return s;
}

ModelSpec small_spec() {
  ModelSpec s;
  s.name = "small";
  s.blocks = {1, 1, 1};
  s.cardinality = 8;
  s.base_width = 4;  // widths 32, 64, 128
  s.stage_channels = {64, 128, 256};
  s.stage_strides = {1, 2, 2};
  s.se_reduction = 16;
  s.stem = Stem::kSmall;
  s.stem_channels = 32;
  s.in_channels = 1;
  s.num_classes = 10;
  return s;
}

std::vector<ModelSpec> all_presets() {
  return {
      family("se_resnext26_32x4d", {2, 2, 2, 2}, 16, false),
      family("se_resnext50_32x4d", {3, 4, 6, 3}, 16, false),
      family("se_resnext101_32x4d", {3, 4, 23, 3}, 16, false),
      family("se_resnext152_32x4d", {3, 8, 36, 3}, 16, false),
      family("resnext50_32x4d", {3, 4, 6, 3}, 0, false),
      family("resnext101_32x4d", {3, 4, 23, 3}, 0, false),
      family("se_resnext50_vd_32x4d", {3, 4, 6, 3}, 16, true),
      family("se_resnext101_vd_32x4d", {3, 4, 23, 3}, 16, true),
      family("resnext50_vd_32x4d", {3, 4, 6, 3}, 0, true),
      small_spec(),
  };
}
}  // namespace

StatusOr<ModelSpec> preset(std::string_view name) {
  for (auto& s : all_presets())
    if (s.name == name) return s;
  std::string known;
  for (auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  return Status::not_found("unknown model preset '" + std::string(name) + "'; known: " + known);
}

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (auto& s : all_presets()) names.push_back(s.name);
  return names;
}

namespace {
// Walks the architecture once; `conv` sees every convolution / linear layer, `bn` every BN.
// Spatial sizes follow PyTorch's floor rule (ceil for the vd avg pool).
struct Walker {
  const ModelSpec& spec;
  int h, w;
  int64_t params = 0, macs = 0;

  static int conv_out(int x, int k, int s, int p) { return (x + 2 * p - k) / s + 1; }
  void conv(int c, int oc, int k, int stride, int pad, int groups) {
    h = conv_out(h, k, stride, pad);
    w = conv_out(w, k, stride, pad);
    int64_t per_out = int64_t(c / groups) * k * k;
    params += int64_t(oc) * per_out;
    macs += int64_t(oc) * per_out * h * w;
  }
  void bn(int c) { params += 2 * int64_t(c); }
  void linear(int in, int out) {
    params += int64_t(in) * out + out;
    macs += int64_t(in) * out;
  }
  void max_pool() {
    h = conv_out(h, 3, 2, 1);
    w = conv_out(w, 3, 2, 1);
  }

  void run() {
    int c = spec.in_channels;
    switch (spec.stem) {
      case Stem::kImageNet:
        conv(c, spec.stem_channels, 7, 2, 3, 1), bn(spec.stem_channels), max_pool();
        break;
      case Stem::kVd: {
        int half = spec.stem_channels / 2;
        conv(c, half, 3, 2, 1, 1), bn(half);
        conv(half, half, 3, 1, 1, 1), bn(half);
        conv(half, spec.stem_channels, 3, 1, 1, 1), bn(spec.stem_channels);
        max_pool();
        break;
      }
      case Stem::kSmall:
        conv(c, spec.stem_channels, 3, 1, 1, 1), bn(spec.stem_channels);
        break;
    }
    c = spec.stem_channels;
    for (int s = 0; s < spec.stage_count(); ++s) {
      for (int b = 0; b < spec.blocks[size_t(s)]; ++b) {
        int stride = b == 0 ? spec.stride(s) : 1;
        int width = spec.width(s), out = spec.out_channels(s);
        int in_h = h, in_w = w;
        conv(c, width, 1, 1, 0, 1), bn(width);
        conv(width, width, 3, stride, 1, spec.cardinality), bn(width);
        conv(width, out, 1, 1, 0, 1), bn(out);
        int out_h = h, out_w = w;
        if (spec.se_reduction > 0) {
          int r = spec.se_channels(s);
          linear(out, r), linear(r, out);
        }
        if (stride != 1 || c != out) {
          h = in_h, w = in_w;
          if (spec.avg_down && stride != 1) {
            h = (h + 1) / 2, w = (w + 1) / 2;  // 2x2/2 avg pool, ceil_mode
            conv(c, out, 1, 1, 0, 1);
          } else {
            conv(c, out, 1, stride, 0, 1);
          }
          bn(out);
          h = out_h, w = out_w;
        }
        c = out;
      }
    }
    linear(c, spec.num_classes);
  }
};
}  // namespace

int64_t count_parameters(const ModelSpec& spec) {
  Walker walker{spec, 224, 224};
  walker.run();
  return walker.params;
}

int64_t count_macs(const ModelSpec& spec, int image_h, int image_w) {
  Walker walker{spec, image_h, image_w};
  walker.run();
  return walker.macs;
}

}  // namespace sx::model
