// sx_bench data: epochs of the dataplane Reader, timed; reports images/s (wall) and images per
// CPU-second of this process (= per fully busy thread), the figure the torchvision peer is held to.
#include "bench/bench_data.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "dataplane/reader.h"

namespace sx::bench {

Status run_data_bench(const DataBenchOptions& o) {
  using namespace sx::dataplane;
  SX_CHECK_ARG(!o.dataset.empty(), "--dataset DIR or --manifest DIR/manifest.json is required");
  // The spelling is --manifest M: accept the file and read its directory.
  std::string dataset = o.dataset;
  if (std::filesystem::path(dataset).filename() == "manifest.json")
    dataset = std::filesystem::path(dataset).parent_path().string();
  if (dataset.empty()) dataset = ".";
  SX_CHECK_ARG(o.repeats > 0 && o.batch > 0 && o.image > 0, "--repeats, --batch, --image must be > 0");
  SX_CHECK_ARG(o.layout == "nchw" || o.layout == "nhwc", "--layout must be nchw or nhwc");
  ReaderConfig c;
  c.seed = o.seed;
  c.batch_size = o.batch;
  c.num_threads = o.threads;
  c.prefetch_depth = o.prefetch;
  c.layout = o.layout == "nchw" ? ImageLayout::kNCHW : ImageLayout::kNHWC;
  c.transform.out_h = c.transform.out_w = o.image;
  c.transform.jpeg_reduced_decode = !o.no_reduced_decode;
  if (o.mode == "train") {
    c.transform.mode = TransformMode::kTrain;
  } else if (o.mode == "eval") {
    c.transform.mode = TransformMode::kEval;
    c.shuffle = false;
  } else if (o.mode == "small_train") {
    c.transform.mode = TransformMode::kSmallTrain;
  } else if (o.mode == "small_eval") {
    c.transform.mode = TransformMode::kSmallEval;
    c.shuffle = false;
  } else {
    return Status::invalid_argument("--mode must be train, eval, small_train or small_eval");
  }
  SX_ASSIGN_OR_RETURN(std::unique_ptr<Reader> reader, Reader::open(dataset, c));

  // One untimed epoch warms the page cache and the threads' scratch buffers.
  std::vector<double> rate, per_cpu_s, cpu_ms, other, wall, self_cpu;
  int64_t images_per_epoch = 0;
  for (int rep = -1; rep < o.repeats; ++rep) {
    SX_TRY(reader->start_epoch(rep + 1));
    CpuWindow window;
    int64_t images = 0, batches = 0;
    for (;;) {
      if (o.max_batches > 0 && batches == o.max_batches) break;
      SX_ASSIGN_OR_RETURN(const Batch* b, reader->next_batch());
      if (!b) break;
      images += b->valid;
      ++batches;
    }
    window.stop();
    if (rep < 0) continue;
    SX_CHECK_ARG(images > 0, "the dataset gives no full batch: lower --batch");
    images_per_epoch = images;
    rate.push_back(double(images) / window.wall_s());
    per_cpu_s.push_back(double(images) / window.self_cpu_s());
    cpu_ms.push_back(window.self_cpu_s() * 1e3 / double(images));
    other.push_back(window.other_cpu_s());
    wall.push_back(window.wall_s());
    self_cpu.push_back(window.self_cpu_s());
  }
  const double med_rate = median(rate), med_per_cpu = median(per_cpu_s), med_cpu_ms = median(cpu_ms);
  if (o.json) {
    nlohmann::json j = {{"bench", "data"},          {"mode", o.mode},
                        {"threads", o.threads},     {"batch", o.batch},
                        {"image", o.image},         {"layout", o.layout},
                        {"reduced_decode", !o.no_reduced_decode},
                        {"images_per_s", med_rate}, {"images_per_cpu_s", med_per_cpu},
                        {"cpu_ms_per_image", med_cpu_ms}, {"other_cpu_s", other},
                        {"wall_s", wall},           {"self_cpu_s", self_cpu},
                        {"images_per_epoch", images_per_epoch},
                        {"dataset", dataset},       {"encoding", reader->manifest().encoding},
                        {"samples_per_epoch", reader->manifest().num_samples}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("sx_bench data: %s %s, %d threads, batch %d, %dx%d %s, reduced decode %s\n", dataset.c_str(),
                o.mode.c_str(), o.threads, o.batch, o.image, o.image, o.layout.c_str(), o.no_reduced_decode ? "off" : "on");
    std::printf("  images/s (wall)        %.1f  (median of %d epochs)\n", med_rate, o.repeats);
    std::printf("  images per CPU-second  %.1f  (= per fully busy thread)\n", med_per_cpu);
    std::printf("  CPU ms per image       %.3f  (feeding M images/s costs M * this / 1000 of a core)\n", med_cpu_ms);
    std::printf("  other processes' CPU   %.2f s during the last epoch\n", other.back());
  }
  return Status::ok();
}

Subcommand add_data_command(CLI::App& parent) {
  auto options = std::make_shared<DataBenchOptions>();
  CLI::App* app = parent.add_subcommand("data", "dataplane reader throughput (decode + augment + batch)");
  CLI::Option* dir = app->add_option("--dataset", options->dataset, "directory made by sx_prep (manifest.json + shards)");
  CLI::Option* manifest = app->add_option("--manifest", options->dataset, "that directory's manifest.json (or the directory)");
  dir->excludes(manifest);
  manifest->excludes(dir);
  app->add_option("--mode", options->mode, "train | eval | small_train | small_eval")->capture_default_str();
  app->add_option("--threads", options->threads, "reader threads")->capture_default_str();
  app->add_option("--batch", options->batch, "per-rank batch")->capture_default_str();
  app->add_option("--image", options->image, "output size (H = W)")->capture_default_str();
  app->add_option("--prefetch", options->prefetch, "ready batches kept ahead")->capture_default_str();
  app->add_option("--repeats", options->repeats, "timed epochs")->capture_default_str();
  app->add_option("--max-batches", options->max_batches, "batches per epoch (0 = all)")->capture_default_str();
  app->add_option("--layout", options->layout, "nchw | nhwc")->capture_default_str();
  app->add_flag("--no-reduced-decode", options->no_reduced_decode, "always decode JPEGs at full size");
  app->add_option("--seed", options->seed, "seed")->capture_default_str();
  app->add_flag("--json", options->json, "one JSON line instead of text");
  return {app, [options] { return run_data_bench(*options); }};
}

}  // namespace sx::bench
