// Pieces of the training loop that need no process: top-k / loss scoring against a naive double
// reference, mixup (pairing, soft targets, lambda determinism and Beta mean), epoch records of
// metrics.jsonl (last record per epoch wins, torn lines ignored) and the PNG plot.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <opencv2/imgcodecs.hpp>

#include "worker/eval.h"
#include "worker/metrics.h"
#include "worker/plot.h"
#include "worker/train_mixup.h"
#include "worker/train_model.h"

namespace sx::worker {
namespace {

TEST(TrainParts, ScoreRowMatchesNaiveReference) {
  const int k = 7;
  const float z[k] = {0.5f, 2.0f, -1.0f, 2.0f, 0.1f, 3.0f, 0.0f};
  for (int label = 0; label < k; ++label) {
    EvalResult r;
    score_row(z, k, label, &r);
    // Reference: rank = classes strictly better, ties broken by lower index.
    int rank = 0;
    for (int c = 0; c < k; ++c) rank += z[c] > z[label] || (z[c] == z[label] && c < label);
    double sum = 0;
    for (int c = 0; c < k; ++c) sum += std::exp(double(z[c]));
    EXPECT_EQ(r.samples, 1);
    EXPECT_EQ(r.top1, rank == 0 ? 1 : 0) << label;
    EXPECT_EQ(r.top5, rank < 5 ? 1 : 0) << label;
    EXPECT_NEAR(r.loss_sum, std::log(sum) - double(z[label]), 1e-9);
  }
  EvalResult r;
  score_row(z, k, 3, &r);  // tie with class 1 (lower index wins): rank 2
  EXPECT_EQ(r.top1, 0);
  EXPECT_EQ(r.top5, 1);
}

TEST(TrainParts, MixupPairsRowsAndMakesSoftTargets) {
  const int n = 5, k = 4, f = 3;
  std::vector<float> img(n * f);
  for (int i = 0; i < n * f; ++i) img[size_t(i)] = float(i);
  const std::vector<float> orig = img;
  const int32_t labels[n] = {0, 1, 2, 3, 1};
  std::vector<float> soft;
  const float lam = 0.75f, eps = 0.1f;
  mixup_batch(img.data(), f, labels, n, k, lam, eps, &soft);
  for (int i = 0; i < n; ++i) {
    const int j = n - 1 - i;
    for (int e = 0; e < f; ++e)
      EXPECT_FLOAT_EQ(img[size_t(i * f + e)], lam * orig[size_t(i * f + e)] + (1 - lam) * orig[size_t(j * f + e)]);
    double total = 0;
    for (int c = 0; c < k; ++c) {
      double want = eps / k + (1 - eps) * (lam * (labels[i] == c) + (1 - lam) * (labels[j] == c));
      EXPECT_NEAR(soft[size_t(i * k + c)], want, 1e-6);
      total += soft[size_t(i * k + c)];
    }
    EXPECT_NEAR(total, 1.0, 1e-6);
  }
}

TEST(TrainParts, MixupLambdaIsDeterministicWithBetaMean) {
  EXPECT_EQ(mixup_lambda(1, 10, 0, 0, 0.2), mixup_lambda(1, 10, 0, 0, 0.2));
  EXPECT_NE(mixup_lambda(1, 10, 0, 0, 0.2), mixup_lambda(1, 11, 0, 0, 0.2));
  EXPECT_NE(mixup_lambda(1, 10, 0, 0, 0.2), mixup_lambda(1, 10, 0, 1, 0.2));
  for (double alpha : {0.2, 1.0, 4.0}) {
    double mean = 0, var = 0;
    const int trials = 20000;
    std::vector<double> v;
    for (int s = 0; s < trials; ++s) v.push_back(mixup_lambda(7, s, 0, 0, alpha));
    for (double x : v) mean += x / trials;
    for (double x : v) var += (x - mean) * (x - mean) / trials;
    EXPECT_NEAR(mean, 0.5, 0.01) << alpha;                          // Beta(a, a): mean 1/2
    EXPECT_NEAR(var, 1.0 / (4 * (2 * alpha + 1)), 0.01) << alpha;   // variance 1 / (4 (2a + 1))
    EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](double x) { return x >= 0 && x <= 1; }));
  }
}

TEST(TrainParts, EpochRecordsAndPlot) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("sx_train_parts_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  {
    auto log = MetricsLog::open((dir / "metrics.jsonl").string());
    ASSERT_TRUE(log.is_ok());
    ASSERT_TRUE(log->write({{"kind", "train"}, {"step", 1}, {"loss", 2.0}}).is_ok());
    ASSERT_TRUE(log->write({{"kind", "epoch"}, {"epoch", 1}, {"train_loss", 1.5}, {"top1", 80.0}, {"top5", 99.0}}).is_ok());
    ASSERT_TRUE(log->write({{"kind", "epoch"}, {"epoch", 2}, {"train_loss", 1.2}, {"top1", nullptr}}).is_ok());
    // A resumed run repeats epoch 2.
    ASSERT_TRUE(log->write({{"kind", "epoch"}, {"epoch", 2}, {"train_loss", 1.1}, {"top1", 85.5}, {"top5", 99.5}}).is_ok());
  }
  std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"kind\":\"epoch\",\"epo";  // torn by a crash
  auto points = read_epoch_points((dir / "metrics.jsonl").string());
  ASSERT_TRUE(points.is_ok()) << points.status().to_string();
  ASSERT_EQ(points->size(), 2u);
  EXPECT_EQ((*points)[1].epoch, 2);
  EXPECT_DOUBLE_EQ((*points)[1].train_loss, 1.1);
  ASSERT_TRUE((*points)[1].top1.has_value());
  EXPECT_DOUBLE_EQ(*(*points)[1].top1, 85.5);

  ASSERT_TRUE(plot_curves((dir / "metrics.jsonl").string(), (dir / "curves.png").string()).is_ok());
  cv::Mat png = cv::imread((dir / "curves.png").string());
  ASSERT_FALSE(png.empty());
  EXPECT_EQ(png.cols, 960);
  EXPECT_EQ(png.rows, 420);
  EXPECT_FALSE(plot_curves((dir / "missing.jsonl").string(), (dir / "x.png").string()).is_ok());
  fs::remove_all(dir);
}

TEST(TrainParts, ThreadsPerRank) {
  EXPECT_EQ(threads_per_rank(3, 2), 3);
  EXPECT_GE(threads_per_rank(0, 1), 1);
  EXPECT_GE(threads_per_rank(0, 64), 1);
}

TEST(TrainParts, FormatDuration) {
  EXPECT_EQ(format_duration(37), "37s");
  EXPECT_EQ(format_duration(252), "4m12s");
  EXPECT_EQ(format_duration(3720), "1h02m");
}

}  // namespace
}  // namespace sx::worker
