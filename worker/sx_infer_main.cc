// sx_infer --checkpoint runs/r50/latest [--labels synset_words.txt] [--top 5] IMG...
// Prints the top classes with softmax probabilities for each image file. The model, input size and
// normalisation come from the checkpoint's own config (config_text, extra_json); images get the
// eval transform (short side resized to the input size, or data.resize_short for ImageNet-size
// models, then a center crop).
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

#include "dataplane/transforms.h"
#include "model/network.h"
#include "storage/checkpoint.h"
#include "worker/config.h"
#include "worker/train_model.h"

namespace {

using sx::Status;
using sx::StatusOr;

// A directory (or dir/latest) -> the file `latest` names; a file stays as it is.
StatusOr<std::string> checkpoint_file(const std::string& path) {
  namespace fs = std::filesystem;
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

Status run(const std::string& ckpt_path, const std::string& labels_path, int top, int threads,
           const std::vector<std::string>& images) {
  SX_ASSIGN_OR_RETURN(std::string file, checkpoint_file(ckpt_path));
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
  if (!labels_path.empty()) {
    SX_ASSIGN_OR_RETURN(names, read_labels(labels_path));
  } else if (extra.contains("class_names")) {
    names = extra["class_names"].get<std::vector<std::string>>();
  }

  auto backend = sx::model::make_cpu_backend({.threads = threads});
  sx::model::NetworkOptions no;
  no.batch = 1;
  no.image_h = no.image_w = job.image_size;
  SX_ASSIGN_OR_RETURN(auto net, sx::model::Network::build(*backend, job.spec, no));
  SX_ASSIGN_OR_RETURN(sx::storage::LoadResult loaded,
                      sx::storage::load_checkpoint(file, sx::worker::checkpoint_slots(*net, false), {.skip_mismatched = true}));
  if (!loaded.skipped.empty()) return Status::invalid_argument(file + ": does not fit the model: " + loaded.skipped[0]);

  sx::dataplane::TransformConfig t = sx::worker::data_transform(config, job, shape.channels, /*train=*/false);
  const bool small = t.mode == sx::dataplane::TransformMode::kSmallEval;
  t.mode = sx::dataplane::TransformMode::kEval;
  if (small || t.resize_short == 0) t.resize_short = job.image_size;
  const int k = job.spec.num_classes;
  std::vector<float> input(size_t(shape.channels) * job.image_size * job.image_size);
  std::vector<float> logits(static_cast<size_t>(k));
  cv::Mat resized;
  top = std::min(top, k);
  for (const std::string& path : images) {
    cv::Mat img = cv::imread(path, shape.channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    if (img.empty()) return Status::data_loss(path + ": cannot read or decode the image");
    sx::dataplane::SamplePlan plan;
    plan.crop = sx::dataplane::center_crop_box(img.rows, img.cols, t.resize_short, t.out_h, t.out_w);
    sx::dataplane::write_sample(img, /*bgr=*/shape.channels == 3, plan, t, sx::dataplane::ImageLayout::kNCHW,
                                input.data(), resized);
    SX_TRY(net->set_input(input.data()));
    SX_TRY(net->forward(false));
    SX_TRY(backend->copy_to_host(logits.data(), net->logits(), logits.size() * sizeof(float)));
    const float zmax = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float z : logits) sum += std::exp(double(z - zmax));
    std::vector<int> order(static_cast<size_t>(k));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + top, order.end(),
                      [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
    std::printf("%s\n", path.c_str());
    for (int i = 0; i < top; ++i) {
      const int c = order[size_t(i)];
      const double p = std::exp(double(logits[size_t(c)] - zmax)) / sum;
      const std::string name = size_t(c) < names.size() ? names[size_t(c)] : "class " + std::to_string(c);
      std::printf("  %d. %6.2f%%  %3d  %s\n", i + 1, 100.0 * p, c, name.c_str());
    }
  }
  return Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  std::string checkpoint, labels;
  int top = 5, threads = 0;
  std::vector<std::string> images;
  CLI::App app{"sx_infer: top classes of image files with a trained sx_worker checkpoint"};
  app.add_option("--checkpoint", checkpoint, "run directory, its `latest`, or a ckpt-*.h5 file")->required();
  app.add_option("--labels", labels, "class names, one per line (synset_words.txt works); default: the training set's");
  app.add_option("--top", top, "classes printed per image")->check(CLI::Range(1, 1000));
  app.add_option("--threads", threads, "compute threads (0 = all cores)");
  app.add_option("images", images, "image files (JPEG, PNG, ...)")->required();
  CLI11_PARSE(app, argc, argv);
  Status st = run(checkpoint, labels, top, threads, images);
  if (!st.is_ok()) {
    std::fprintf(stderr, "sx_infer: %s\n", st.to_string().c_str());
    return 1;
  }
  return 0;
}
