#include "dataplane/prep_pipeline.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <future>
#include <thread>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "dataplane/hdf5_write.h"
#include "dataplane/image_decode.h"
#include "dataplane/prep_files.h"
#include "dataplane/prep_idx.h"
#include "dataplane/prep_progress.h"
#include "dataplane/shard_format.h"

namespace fs = std::filesystem;

namespace sx::dataplane {
namespace {

// One converted sample, or why it could not be converted.
struct Sample {
  std::vector<uint8_t> bytes;
  int h = 0, w = 0, c = 0;
  std::string error;  // non-empty = bad input
};

// Resize (short side to S: INTER_AREA when shrinking, INTER_CUBIC when enlarging), centre crop,
// then encode. img is 8-bit (H, W, C) RGB or gray.
Sample finish_sample(cv::Mat img, const PrepOptions& o) {
  Sample s;
  auto resize_short = [](const cv::Mat& src, int side) {
    const int short_in = std::min(src.rows, src.cols);
    if (short_in == side) return src;
    const double scale = static_cast<double>(side) / short_in;
    const int h = src.rows <= src.cols ? side : std::max(1, static_cast<int>(std::lround(src.rows * scale)));
    const int w = src.cols < src.rows ? side : std::max(1, static_cast<int>(std::lround(src.cols * scale)));
    cv::Mat dst;
    cv::resize(src, dst, cv::Size(w, h), 0, 0, side < short_in ? cv::INTER_AREA : cv::INTER_CUBIC);
    return dst;
  };
  if (o.short_side > 0) img = resize_short(img, o.short_side);
  if (o.center_crop > 0) {
    if (std::min(img.rows, img.cols) < o.center_crop) img = resize_short(img, o.center_crop);
    const int y = (img.rows - o.center_crop) / 2, x = (img.cols - o.center_crop) / 2;
    img = img(cv::Rect(x, y, o.center_crop, o.center_crop)).clone();
  }
  if (!img.isContinuous()) img = img.clone();
  s.h = img.rows;
  s.w = img.cols;
  s.c = img.channels();
  if (o.encode == "jpeg") {
    cv::Mat bgr;
    if (img.channels() == 3) cv::cvtColor(img, bgr, cv::COLOR_RGB2BGR);
    else bgr = img;
    if (!cv::imencode(".jpg", bgr, s.bytes, {cv::IMWRITE_JPEG_QUALITY, o.quality}))
      s.error = "JPEG encoding failed (OpenCV imencode)";
  } else {
    s.bytes.assign(img.data, img.data + img.total() * img.elemSize());
  }
  return s;
}

Sample convert_file(const PrepItem& item, const PrepOptions& o) {
  StatusOr<std::vector<uint8_t>> bytes = read_file_bytes(item.path, o.max_file_bytes);
  if (!bytes.is_ok()) {
    Sample s;
    s.error = bytes.status().code() == StatusCode::kNotFound ? "missing file (" + item.path + ")"
                                                             : bytes.status().message();
    return s;
  }
  StatusOr<cv::Mat> img = decode_image(*bytes, DecodeOptions{o.max_pixels, o.channels});
  if (!img.is_ok()) {
    Sample s;
    s.error = img.status().message();
    return s;
  }
  return finish_sample(std::move(*img), o);
}

// Runs fn(i) for i in [0, n) on `threads` threads (the caller's thread is one of them).
template <typename Fn>
void parallel_for(int64_t n, int threads, Fn fn) {
  std::atomic<int64_t> next{0};
  auto body = [&] {
    for (int64_t i; (i = next.fetch_add(1)) < n;) fn(i);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::min<int64_t>(threads, n); ++t) pool.emplace_back(body);
  body();
  for (auto& t : pool) t.join();
}

// Appends samples in order, closing a shard every samples_per_shard.
class OrderedWriter {
 public:
  OrderedWriter(const PrepOptions& o, Manifest* m) : o_(o), m_(m) {}
  Status add(const Sample& s, int32_t label) {
    shard_.add(s.bytes, s.h, s.w, s.c, label);
    if (shard_.num_samples() == o_.samples_per_shard) return flush();
    return Status::ok();
  }
  Status flush() {
    if (shard_.num_samples() == 0) return Status::ok();
    ShardInfo info;
    info.file = shard_file_name(static_cast<int64_t>(m_->shards.size()));
    info.num_samples = shard_.num_samples();
    info.first_index = m_->num_samples;
    SX_ASSIGN_OR_RETURN(info.crc32, shard_.finish(o_.out, info.file, o_.encode, info.first_index));
    m_->num_samples += info.num_samples;
    m_->shards.push_back(std::move(info));
    return Status::ok();
  }

 private:
  const PrepOptions& o_;
  Manifest* m_;
  ShardWriter shard_;
};

// Removes what an earlier run left in the output directory: the manifest first, so that the
// directory reads as incomplete from the first moment, then shards and partial files.
Status clean_output_dir(const std::string& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return Status::unavailable("cannot create output directory " + out + ": " + ec.message());
  fs::remove(fs::path(out) / kManifestName, ec);
  for (const auto& e : fs::directory_iterator(out, ec)) {
    const std::string n = e.path().filename().string();
    bool shard = n.rfind("shard-", 0) == 0 && n.size() > 3 && n.compare(n.size() - 3, 3, ".h5") == 0;
    bool partial = n.rfind(".shard-", 0) == 0 && n.find(".partial") != std::string::npos;
    if (shard || partial) fs::remove(e.path(), ec);
  }
  if (ec) return Status::unavailable("cannot clean output directory " + out + ": " + ec.message());
  return Status::ok();
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

Status write_report(const std::string& path, const std::vector<BadInput>& bad) {
  std::string text = "# sx_prep --skip-bad: inputs left out (where <TAB> file <TAB> reason)\n";
  for (const BadInput& b : bad) text += b.where + "\t" + b.file + "\t" + b.reason + "\n";
  return write_file_atomic(path, text);
}

}  // namespace

std::string shard_file_name(int64_t index) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "shard-%05lld.h5", static_cast<long long>(index));
  return buf;
}

Status validate_options(const PrepOptions& o) {
  auto bad = [](const std::string& m) { return Status::invalid_argument(m); };
  if (o.out.empty()) return bad("--out DIR is required");
  if (o.format == "list") {
    if (o.list.empty()) return bad("--format list needs --list FILE (and usually --root DIR)");
  } else if (o.format == "folder") {
    if (o.root.empty()) return bad("--format folder needs --root DIR (one sub-folder per class)");
  } else if (o.format == "idx") {
    if (o.images.empty() || o.labels.empty()) return bad("--format idx needs --images FILE and --labels FILE");
  } else {
    return bad("--format must be list, folder or idx, got '" + o.format + "'");
  }
  if (o.encode != "raw" && o.encode != "jpeg") return bad("--encode must be raw or jpeg, got '" + o.encode + "'");
  if (o.quality < 1 || o.quality > 100) return bad("--quality must be in [1, 100]");
  if (o.samples_per_shard < 1) return bad("--samples-per-shard must be >= 1");
  if (o.threads < 1) return bad("--threads must be >= 1");
  if (o.channels != 0 && o.channels != 1 && o.channels != 3) return bad("--channels must be 1 or 3");
  if (o.short_side < 0 || o.center_crop < 0) return bad("--short-side and --center-crop must be >= 0");
  if (o.short_side > 0 && o.center_crop > o.short_side)
    return bad("--center-crop " + std::to_string(o.center_crop) + " is larger than --short-side " +
               std::to_string(o.short_side));
  if (o.max_pixels < 1) return bad("--max-pixels must be >= 1");
  if (o.num_classes < 0) return bad("--num-classes must be >= 0");
  return Status::ok();
}

StatusOr<PrepResult> run_prep(const PrepOptions& opts) {
  SX_TRY(validate_options(opts));
  PrepOptions o = opts;
  if (o.channels == 0) o.channels = o.format == "idx" ? 1 : 3;
  PrepResult result;
  Manifest& m = result.manifest;
  m.format_version = kShardFormatVersion;
  m.encoding = o.encode;
  m.channels = o.channels;
  m.short_side = o.short_side;
  m.center_crop = o.center_crop;
  m.command = o.command;

  // Class names given by the user fix num_classes (and the label range) up front.
  std::vector<std::string> names;
  if (!o.class_names.empty()) {
    if (o.class_names == "fashion-mnist") names = fashion_mnist_class_names();
    else if (o.class_names == "mnist") names = mnist_class_names();
    else {
      SX_ASSIGN_OR_RETURN(names, read_class_names(o.class_names));
    }
    if (o.num_classes > 0 && o.num_classes != static_cast<int>(names.size()))
      return Status::invalid_argument("--class-names " + o.class_names + " has " + std::to_string(names.size()) +
                                      " names but --num-classes is " + std::to_string(o.num_classes));
    o.num_classes = static_cast<int>(names.size());
  }

  // Gather the inputs.
  std::vector<PrepItem> items;
  std::vector<BadInput> bad;
  IdxDataset idx;
  if (o.format == "list") {
    SX_ASSIGN_OR_RETURN(ListFile lf, parse_list_file(o.list, o.root, o.num_classes, o.allow_outside_root));
    items = std::move(lf.items);
    bad = std::move(lf.bad);
    if (o.num_classes == 0) o.num_classes = lf.max_label + 1;
    if (names.empty())
      for (int k = 0; k < o.num_classes; ++k) names.push_back(std::to_string(k));
  } else if (o.format == "folder") {
    SX_ASSIGN_OR_RETURN(FolderTree tree, walk_image_folder(o.root));
    items = std::move(tree.items);
    if (tree.ignored_files > 0)
      result.notes += "ignored " + std::to_string(tree.ignored_files) + " files that are not .jpg/.jpeg/.png\n";
    if (names.empty()) names = tree.class_names;
    else if (names.size() != tree.class_names.size())
      return Status::invalid_argument("--class-names has " + std::to_string(names.size()) + " names but " + o.root +
                                      " has " + std::to_string(tree.class_names.size()) + " class folders");
    o.num_classes = static_cast<int>(names.size());
  } else {
    SX_ASSIGN_OR_RETURN(idx, read_idx(o.images, o.labels));
    int max_label = 0;
    for (int64_t i = 0; i < idx.count; ++i) {
      if (o.num_classes > 0 && idx.labels[i] >= o.num_classes)
        return Status::invalid_argument(o.labels + ": label " + std::to_string(idx.labels[i]) + " of sample " +
                                        std::to_string(i) + " is out of range [0, " + std::to_string(o.num_classes) + ")");
      max_label = std::max<int>(max_label, idx.labels[i]);
    }
    if (o.num_classes == 0) o.num_classes = max_label + 1;
    if (names.empty()) {
      // Fashion-MNIST and MNIST have the same shapes; the file name tells them apart.
      bool fashion = lower(o.images).find("fashion") != std::string::npos;
      if (o.num_classes == 10 && fashion) {
        names = fashion_mnist_class_names();
        result.notes += "class names: Fashion-MNIST (the images path contains 'fashion'; override with --class-names)\n";
      } else {
        for (int k = 0; k < o.num_classes; ++k) names.push_back(std::to_string(k));
        result.notes += "class names: the label numbers (use --class-names FILE|fashion-mnist to name them)\n";
      }
    }
  }
  if (!bad.empty() && !o.skip_bad)
    return Status::invalid_argument(bad.front().to_string() + ". HINT: --skip-bad leaves bad inputs out and lists them");

  const int64_t inputs = o.format == "idx" ? idx.count : static_cast<int64_t>(items.size());
  const int64_t first = o.first, end = o.end < 0 ? inputs : o.end;
  if (first < 0 || first >= end || end > inputs)
    return Status::invalid_argument("--range " + std::to_string(first) + ":" + std::to_string(end) +
                                    " is not inside the input's " + std::to_string(inputs) +
                                    " samples (expected 0 <= FIRST < END <= " + std::to_string(inputs) + ")");
  const int64_t total = end - first;

  // Only once the inputs are read (a typo in a path or a broken list leaves an earlier dataset in OUT
  // as it was), and before the first shard: a run that fails from here on leaves OUT without a
  // manifest (incomplete, never a stale manifest naming new shards).
  SX_TRY(clean_output_dir(o.out));
  m.num_classes = o.num_classes;
  m.class_names = names;

  Progress progress(total, o.progress_interactive);
  OrderedWriter writer(o, &m);

  // Batches: workers fill one buffer while the writer drains the previous one.
  const int64_t batch = o.format == "idx" ? 8192 : std::max<int64_t>(256, 32 * o.threads);
  std::vector<Sample> buf[2] = {std::vector<Sample>(batch), std::vector<Sample>(batch)};
  std::future<Status> pending;
  auto drain = [&](int b, int64_t start, int64_t count) -> Status {
    for (int64_t i = 0; i < count; ++i) {
      Sample& s = buf[b][i];
      const int64_t g = first + start + i;
      if (!s.error.empty() && o.format == "idx") {
        return Status::internal("sample " + std::to_string(g) + " of " + o.images + ": " + s.error);
      } else if (!s.error.empty()) {
        const PrepItem& it = items[g];
        BadInput rec{it.order, it.line > 0 ? fs::path(o.list).filename().string() + " line " + std::to_string(it.line)
                                           : it.display,
                     it.display, s.error};
        if (!o.skip_bad) return Status::data_loss(rec.to_string() + ". HINT: --skip-bad leaves bad inputs out and lists them");
        bad.push_back(std::move(rec));
      } else {
        SX_TRY(writer.add(s, o.format == "idx" ? idx.labels[g] : items[g].label));
      }
      s = Sample();
    }
    if (o.progress) progress.update(start + count);
    return Status::ok();
  };
  Status status;
  for (int64_t start = 0, k = 0; start < total; start += batch, ++k) {
    const int b = static_cast<int>(k % 2);
    const int64_t count = std::min(batch, total - start);
    parallel_for(count, o.threads, [&](int64_t i) {
      const int64_t g = first + start + i;
      if (o.format == "idx") {
        cv::Mat img(idx.rows, idx.cols, CV_8UC1, idx.pixels.data() + g * idx.rows * idx.cols);
        if (o.channels == 3) cv::cvtColor(img, img, cv::COLOR_GRAY2RGB);
        buf[b][i] = finish_sample(img, o);
      } else {
        buf[b][i] = convert_file(items[g], o);
      }
    });
    if (pending.valid() && !(status = pending.get()).is_ok()) break;
    pending = std::async(std::launch::async, drain, b, start, count);
  }
  if (pending.valid()) {
    Status last = pending.get();
    if (status.is_ok()) status = last;
  }
  if (status.is_ok()) status = writer.flush();
  if (!status.is_ok()) return status;  // no manifest: the directory reads as incomplete
  if (o.progress) progress.finish(total);

  std::stable_sort(bad.begin(), bad.end(), [](const BadInput& a, const BadInput& b) { return a.order < b.order; });
  m.skipped = static_cast<int64_t>(bad.size());
  if (m.num_samples == 0) return Status::invalid_argument("no usable samples in the input (" + std::to_string(bad.size()) + " bad)");
  if (!bad.empty()) {
    result.report_path = o.bad_report.empty() ? (fs::path(o.out) / "skipped.txt").string() : o.bad_report;
    SX_TRY(write_report(result.report_path, bad));
  }
  result.skipped = std::move(bad);
  SX_TRY(fsync_directory(o.out));    // every shard's rename is on disk before the manifest names it
  SX_TRY(save_manifest(o.out, m));  // last: its presence means every shard is complete
  return result;
}

}  // namespace sx::dataplane
