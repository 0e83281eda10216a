// Name mapping between our parameters and PyTorch ResNet-family state_dicts (see torch_names.h).
#include "model/torch_names.h"

#include <charconv>

namespace sx::model {

namespace {

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// Reads a decimal number at the start of s and the '.' after it; advances s.
bool take_index(std::string_view& s, int& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  if (ec != std::errc() || end == s.data() || end == s.data() + s.size() || *end != '.') return false;
  s.remove_prefix(size_t(end - s.data()) + 1);
  return true;
}

StatusOr<std::string> stem_name(const ModelSpec& spec, std::string_view rest, std::string_view full) {
  // rest: "conv1.weight", "bn2.running_mean", ...
  const bool conv = starts_with(rest, "conv"), bn = starts_with(rest, "bn");
  if (!conv && !bn) return Status::invalid_argument("unknown stem parameter '" + std::string(full) + "'");
  std::string_view tail = rest.substr(conv ? 4 : 2);
  int i = 0;
  if (!take_index(tail, i)) return Status::invalid_argument("unknown stem parameter '" + std::string(full) + "'");
  const std::string field(tail);
  if (spec.stem != Stem::kVd) {
    if (i != 1) return Status::invalid_argument("unknown stem parameter '" + std::string(full) + "'");
    return std::string(conv ? "conv1." : "bn1.") + field;
  }
  // timm's deep stem: Sequential(conv, bn, relu, conv, bn, relu, conv) then bn1.
  static const char* kConv[] = {"conv1.0.", "conv1.3.", "conv1.6."};
  static const char* kBn[] = {"conv1.1.", "conv1.4.", "bn1."};
  if (i < 1 || i > 3) return Status::invalid_argument("unknown stem parameter '" + std::string(full) + "'");
  return std::string(conv ? kConv[i - 1] : kBn[i - 1]) + field;
}

}  // namespace

StatusOr<std::string> torch_name(const ModelSpec& spec, std::string_view name) {
  if (starts_with(name, "fc.")) return std::string(name);
  if (starts_with(name, "stem.")) return stem_name(spec, name.substr(5), name);
  std::string_view s = name;
  int stage = 0, block = 0;
  if (!starts_with(s, "stage")) return Status::invalid_argument("unknown parameter '" + std::string(name) + "'");
  s.remove_prefix(5);
  if (!take_index(s, stage) || !starts_with(s, "block"))
    return Status::invalid_argument("unknown parameter '" + std::string(name) + "'");
  s.remove_prefix(5);
  if (!take_index(s, block)) return Status::invalid_argument("unknown parameter '" + std::string(name) + "'");
  std::string prefix = "layer" + std::to_string(stage + 1) + "." + std::to_string(block) + ".";
  if (starts_with(s, "downsample.conv."))
    return prefix + (spec.avg_down ? "downsample.1." : "downsample.0.") + std::string(s.substr(16));
  if (starts_with(s, "downsample.bn."))
    return prefix + (spec.avg_down ? "downsample.2." : "downsample.1.") + std::string(s.substr(14));
  return prefix + std::string(s);
}

std::vector<int64_t> torch_shape(std::string_view name, const std::vector<int64_t>& shape) {
  const bool se_weight = name.find(".se.fc") != std::string_view::npos && name.ends_with(".weight");
  if (se_weight && shape.size() == 2) return {shape[0], shape[1], 1, 1};
  return shape;
}

std::string normalize_torch_name(std::string_view torch_name) {
  std::string s(torch_name);
  while (starts_with(s, "module.")) s.erase(0, 7);
  if (starts_with(s, "layer0.")) s.erase(0, 7);          // Cadene: layer0.conv1 / layer0.bn1
  if (starts_with(s, "last_linear.")) s = "fc." + s.substr(12);
  if (size_t at = s.find(".se_module."); at != std::string::npos) s.replace(at, 11, ".se.");
  return s;
}

}  // namespace sx::model
