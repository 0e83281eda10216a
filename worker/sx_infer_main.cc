// sx_infer --checkpoint runs/r50/latest [--labels synset_words.txt] [--top 5] [--batch 16]
//          [--format text|json|csv] [--list list.txt [--root DIR]] [--dir DIR] [IMG...]
// The top classes with softmax probabilities for each image: files given as arguments, the paths
// of a list file (ImageNet list format, a label after the path is ignored), and the .jpg/.jpeg/.png
// files under a folder (recursive, sorted). Images run in batches. The model, input size and
// normalisation come from the checkpoint's own config (config_text, extra_json); images get the eval
// transform (short side resized to the input size, or data.resize_short for ImageNet-size models,
// then a center crop). An image that cannot be read is reported on stderr and skipped (exit 3 at the
// end); a NaN/inf logit is an error naming the checkpoint (exit 1): a broken model gets no answer.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "common/guard.h"
#include "dataplane/transforms.h"
#include "model/network.h"
#include "storage/checkpoint.h"
#include "worker/config.h"
#include "worker/eval.h"
#include "worker/train_model.h"

namespace {

namespace fs = std::filesystem;
using sx::Status;
using sx::StatusOr;

struct Options {
  std::string checkpoint, labels, list, root, dir, format = "text";
  int top = 5, threads = 0, batch = 16;
  std::vector<std::string> images;
};

// A directory (or dir/latest) -> the file `latest` names; a file stays as it is.
StatusOr<std::string> checkpoint_file(const std::string& path) {
  if (fs::is_directory(path)) return sx::storage::find_latest(path);
  if (fs::path(path).filename() == "latest") return sx::storage::find_latest(fs::path(path).parent_path().string());
  return path;
}

// synset_words.txt ("n01440764 tench, Tinca tinca") or one name per line.
StatusOr<std::vector<std::string>> read_labels(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::not_found(path + ": cannot open the labels file");
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > 10 && line[0] == 'n' && line[9] == ' ' &&
        std::all_of(line.begin() + 1, line.begin() + 9, [](char c) { return c >= '0' && c <= '9'; }))
      line = line.substr(10);
    names.push_back(line);
  }
  return names;
}

// Every input path in order: arguments, then the list file, then the folder.
StatusOr<std::vector<std::string>> input_paths(const Options& o) {
  std::vector<std::string> paths = o.images;
  if (!o.list.empty()) {
    std::ifstream in(o.list);
    if (!in) return Status::not_found(o.list + ": cannot open the list file");
    const fs::path base = o.root.empty() ? fs::path(o.list).parent_path() : fs::path(o.root);
    for (std::string line; std::getline(in, line);) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
      if (line.empty()) continue;
      const size_t space = line.rfind(' ');  // "path label": the label is optional here
      if (space != std::string::npos && line.find_first_not_of("0123456789", space + 1) == std::string::npos)
        line.resize(space);
      paths.push_back(fs::path(line).is_absolute() ? line : (base / line).string());
    }
  }
  if (!o.dir.empty()) {
    if (!fs::is_directory(o.dir)) return Status::not_found(o.dir + ": not a directory");
    std::vector<std::string> found;
    for (const auto& e : fs::recursive_directory_iterator(o.dir)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png")) found.push_back(e.path().string());
    }
    std::sort(found.begin(), found.end());
    paths.insert(paths.end(), found.begin(), found.end());
  }
  if (paths.empty()) return Status::invalid_argument("no images: give image files, --list or --dir");
  return paths;
}

class Printer {
 public:
  Printer(std::string format, const std::vector<std::string>& names) : format_(std::move(format)), names_(names) {
    if (format_ == "csv") std::printf("image,rank,class,name,probability\n");
  }
  void print(const std::string& path, const std::vector<std::pair<int, double>>& top) {
    if (format_ == "json") {
      nlohmann::ordered_json j{{"image", path}, {"top", nlohmann::json::array()}};
      for (const auto& [c, p] : top) j["top"].push_back({{"class", c}, {"name", name(c)}, {"probability", p}});
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else if (format_ == "csv") {
      for (size_t i = 0; i < top.size(); ++i)
        std::printf("%s,%zu,%d,%s,%.6f\n", csv(path).c_str(), i + 1, top[i].first, csv(name(top[i].first)).c_str(),
                    top[i].second);
    } else {
      std::printf("%s\n", path.c_str());
      for (size_t i = 0; i < top.size(); ++i)
        std::printf("  %zu. %6.2f%%  %3d  %s\n", i + 1, 100.0 * top[i].second, top[i].first, name(top[i].first).c_str());
    }
  }

 private:
  std::string name(int c) const { return size_t(c) < names_.size() ? names_[size_t(c)] : "class " + std::to_string(c); }
  static std::string csv(const std::string& s) {  // RFC 4180 quoting where needed
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
  }
  std::string format_;
  const std::vector<std::string>& names_;
};

// Returns the number of images skipped.
StatusOr<int> run(const Options& o) {
  SX_ASSIGN_OR_RETURN(std::vector<std::string> paths, input_paths(o));
  SX_ASSIGN_OR_RETURN(std::string file, checkpoint_file(o.checkpoint));
  SX_ASSIGN_OR_RETURN(sx::storage::VerifyReport report, sx::storage::verify_checkpoint(file));
  const sx::storage::CheckpointMeta& meta = report.meta;
  SX_ASSIGN_OR_RETURN(sx::worker::JobConfig config,
                      sx::worker::parse_job_config(meta.config_text, file + " (config_text)", {"mode=eval", "data.val=-"}));
  auto extra = nlohmann::json::parse(meta.extra_json, nullptr, false);
  if (extra.is_discarded() || !extra.contains("num_classes") || !extra.contains("in_channels"))
    return Status::data_loss(file + ": extra_json lacks num_classes / in_channels (not written by sx_worker?)");
  sx::dataplane::Manifest shape;
  shape.num_classes = extra["num_classes"].get<int>();
  shape.channels = extra["in_channels"].get<int>();
  SX_ASSIGN_OR_RETURN(sx::worker::ResolvedJob job, sx::worker::resolve_job(config, shape, 1, 1));

  std::vector<std::string> names;
  if (!o.labels.empty()) {
    SX_ASSIGN_OR_RETURN(names, read_labels(o.labels));
  } else if (extra.contains("class_names")) {
    names = extra["class_names"].get<std::vector<std::string>>();
  }

  const int batch = std::max(1, std::min<int>(o.batch, int(paths.size())));
  auto backend = sx::model::make_cpu_backend({.threads = o.threads});
  sx::model::NetworkOptions no;
  no.batch = batch;
  no.image_h = no.image_w = job.image_size;
  SX_ASSIGN_OR_RETURN(auto net, sx::model::Network::build(*backend, job.spec, no));
  SX_ASSIGN_OR_RETURN(sx::storage::LoadResult loaded,
                      sx::storage::load_checkpoint(file, sx::worker::checkpoint_slots(*net, false), {.skip_mismatched = true}));
  if (!loaded.skipped.empty()) return Status::invalid_argument(file + ": does not fit the model: " + loaded.skipped[0]);
  SX_TRY(sx::worker::check_finite_parameters(*net).with_context(file));
  backend->freeze_weights(true);  // the parameters are read-only from here on

  sx::dataplane::TransformConfig t = sx::worker::data_transform(config, job, shape.channels, /*train=*/false);
  const bool small = t.mode == sx::dataplane::TransformMode::kSmallEval;
  t.mode = sx::dataplane::TransformMode::kEval;
  if (small || t.resize_short == 0) t.resize_short = job.image_size;
  const int k = job.spec.num_classes, top = std::min(o.top, k);
  const size_t per_image = size_t(shape.channels) * job.image_size * job.image_size;
  std::vector<float> input(per_image * batch), logits(size_t(batch) * k);
  std::vector<std::string> rows;  // paths of this batch's filled rows
  cv::Mat resized;
  Printer printer(o.format, names);
  int skipped = 0;

  auto flush = [&]() -> Status {
    if (rows.empty()) return Status::ok();
    std::fill(input.begin() + std::ptrdiff_t(rows.size() * per_image), input.end(), 0.f);  // unused rows
    SX_TRY(net->set_input(input.data()));
    SX_TRY(net->forward(false));
    SX_TRY(backend->copy_to_host(logits.data(), net->logits(), logits.size() * sizeof(float)));
    for (size_t r = 0; r < rows.size(); ++r) {
      const float* z = logits.data() + r * size_t(k);
      if (!std::all_of(z, z + k, [](float v) { return std::isfinite(v); }))
        return Status::data_loss(file + ": non-finite logits (NaN or inf) for " + rows[r] +
                                 ": the checkpoint's parameters are broken (diverged?); no class can be given");
      const float zmax = *std::max_element(z, z + k);
      double sum = 0;
      for (int c = 0; c < k; ++c) sum += std::exp(double(z[c] - zmax));
      std::vector<int> order(static_cast<size_t>(k));
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](int a, int b) { return z[a] > z[b]; });
      std::vector<std::pair<int, double>> best;
      for (int i = 0; i < top; ++i) best.emplace_back(order[size_t(i)], std::exp(double(z[order[size_t(i)]] - zmax)) / sum);
      printer.print(rows[r], best);
    }
    std::fflush(stdout);
    rows.clear();
    return Status::ok();
  };

  for (const std::string& path : paths) {
    cv::Mat img = cv::imread(path, shape.channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    if (img.empty()) {
      std::fprintf(stderr, "sx_infer: skipped %s: cannot read or decode the image\n", path.c_str());
      ++skipped;
      continue;
    }
    sx::dataplane::SamplePlan plan;
    plan.crop = sx::dataplane::center_crop_box(img.rows, img.cols, t.resize_short, t.out_h, t.out_w);
    sx::dataplane::write_sample(img, /*bgr=*/shape.channels == 3, plan, t, sx::dataplane::ImageLayout::kNCHW,
                                input.data() + rows.size() * per_image, resized);
    rows.push_back(path);
    if (int(rows.size()) == batch) SX_TRY(flush());
  }
  SX_TRY(flush());
  return skipped;
}

}  // namespace

static int infer_main(int argc, char** argv) {
  Options o;
  CLI::App app{"sx_infer: top classes of images with a trained sx_worker checkpoint"};
  app.add_option("--checkpoint", o.checkpoint, "run directory, its `latest`, or a ckpt-*.h5 file")->required();
  app.add_option("--labels", o.labels, "class names, one per line (synset_words.txt works); default: the training set's");
  app.add_option("--top", o.top, "classes printed per image")->check(CLI::Range(1, 1000));
  app.add_option("--threads", o.threads, "compute threads (0 = all cores)");
  app.add_option("--batch", o.batch, "images per forward pass")->check(CLI::Range(1, 1024));
  app.add_option("--format", o.format, "text, json (one object per line) or csv (one row per class)")
      ->check(CLI::IsMember({"text", "json", "csv"}));
  app.add_option("--list", o.list, "list file: one image path per line (a label after it is ignored)");
  app.add_option("--root", o.root, "folder the --list paths are relative to (default: the list file's folder)");
  app.add_option("--dir", o.dir, "every .jpg/.jpeg/.png under this folder (recursive, sorted)");
  app.add_option("images", o.images, "image files (JPEG, PNG, ...)");
  app.footer("Exit status: 0 all images classified, 3 some images skipped (unreadable; named on stderr), 1 error.");
  CLI11_PARSE(app, argc, argv);
  StatusOr<int> skipped = run(o);
  if (!skipped.is_ok()) {
    std::fprintf(stderr, "sx_infer: %s\n", skipped.status().to_string().c_str());
    return 1;
  }
  if (*skipped > 0) {
    std::fprintf(stderr, "sx_infer: %d image(s) skipped\n", *skipped);
    return 3;
  }
  return 0;
}

int main(int argc, char** argv) {
  return sx::guarded_main("sx_infer", [&] { return infer_main(argc, argv); });
}
