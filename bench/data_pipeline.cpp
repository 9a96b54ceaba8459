// bench_data_pipeline: decode + RandomResizedCrop(224) + flip + normalise, images/s on ONE thread, ours (libjpeg
// decode, ATen's antialiased uint8 resize, normalised straight into the batch tensor by the DataLoader) against
// torchvision + PIL (bench/data_pipeline.py, antialiased by Pillow) on the same JPEG files.
//   build/bench/bench_data_pipeline [--folder DIR] [--images N] [--epochs N] [--interpolation bilinear|bicubic]
//                                   [--python PATH]
// Without --folder it writes ImageNet-like JPEGs to a temporary folder and removes them afterwards.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>

#include "nepa/data/dataset.h"
#include "nepa/data/loader.h"

using namespace nepa;
namespace fs = std::filesystem;

namespace {

// 500x375 JPEGs (quality 90): smooth colour fields with a few edges and sensor-like noise, so that the entropy
// decoder has about as much to do as on an ImageNet photo (~90 KB each; ImageNet averages ~110 KB).
void write_images(const fs::path& dir, int n) {
  fs::create_directories(dir);
  std::mt19937 rng(0);
  std::normal_distribution<float> noise(0.f, 14.f);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int i = 0; i < n; ++i) {
    cv::Mat img(375, 500, CV_8UC3);
    const double fx = 0.005 + 0.02 * u(rng), fy = 0.005 + 0.02 * u(rng), ph = 6.3 * u(rng);
    const int edge = static_cast<int>(100 + 300 * u(rng));
    for (int y = 0; y < img.rows; ++y) {
      auto* row = img.ptr<uint8_t>(y);
      for (int x = 0; x < img.cols; ++x)
        for (int c = 0; c < 3; ++c) {
          double v = 128 + 70 * std::sin(fx * x + fy * y * (c + 1) + ph + c) + (x > edge ? 40 : -20) * (c == 1);
          v += 25 * std::sin(0.3 * x + 0.2 * y) * std::sin(0.05 * y * (i % 7 + 1));
          row[3 * x + c] = cv::saturate_cast<uint8_t>(v + noise(rng));
        }
    }
    cv::imwrite((dir / fmt::format("{:04d}.jpg", i)).string(), img, {cv::IMWRITE_JPEG_QUALITY, 90});
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs the Python side and returns its printed numbers ("img_per_s", "decode_img_per_s"); empty on failure.
std::map<std::string, double> run_python(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((cmd + " 2>&1").c_str(), "r"), pclose);
  std::string out;
  char buf[4096];
  while (pipe && fgets(buf, sizeof(buf), pipe.get())) out += buf;
  std::map<std::string, double> values;
  for (const char* key : {"img_per_s", "decode_img_per_s"}) {
    const std::string tag = fmt::format("\"{}\": ", key);
    auto pos = out.find(tag);
    if (pos != std::string::npos) values[key] = std::stod(out.substr(pos + tag.size()));
  }
  if (!values.count("img_per_s")) fmt::print("torchvision side did not run:\n{}\n", out);
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"data pipeline throughput per thread: ours vs torchvision/PIL"};
  int images = 200, epochs = 5;
  std::string folder, interpolation = "bilinear";
  std::string python = std::getenv("NEPA_PYTHON") ? std::getenv("NEPA_PYTHON") : "";
  if (python.empty() && std::getenv("HOME")) python = std::string(std::getenv("HOME")) + "/.cache/nepa/venv/bin/python";
  app.add_option("--folder", folder, "existing folder of JPEGs (default: generate --images of them)");
  app.add_option("--images", images, "JPEG files to generate");
  app.add_option("--epochs", epochs, "passes over the files (the median pass is reported)");
  app.add_option("--interpolation", interpolation, "bilinear (pretraining) | bicubic (fine-tuning)");
  app.add_option("--python", python, "Python with torch, torchvision and Pillow");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(1);
  cv::setNumThreads(0);  // OpenCV's own thread pool off: one thread means one thread

  // The loader wants root/<class>/<image>: a generated set lives in <tmp>/c/, a given folder is linked as one.
  const fs::path root = fs::temp_directory_path() / ("nepa_bench_jpeg_" + std::to_string(::getpid()));
  if (folder.empty()) {
    write_images(root / "c", images);
  } else {
    fs::create_directories(root);
    fs::create_directory_symlink(fs::absolute(folder), root / "c");
  }
  auto ds = make_image_folder(root.string());
  uintmax_t bytes = 0;
  for (int64_t i = 0; i < ds->size(); ++i) bytes += fs::file_size(ds->describe(i));

  DataConfig cfg;
  cfg.dataset = "image_folder";
  cfg.image_size = 224;
  cfg.interpolation = interpolation;
  cfg.num_workers = 0;  // everything on this thread
  LoaderOptions opts;
  opts.batch_size = 25;
  DataLoader loader(ds, cfg, opts);
  std::vector<double> rates, decode_rates;
  for (int e = 0; e < epochs; ++e) {
    auto t0 = std::chrono::steady_clock::now();
    loader.start(e);
    int64_t n = 0;
    while (auto b = loader.next()) n += b->images.size(0);
    rates.push_back(n / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < ds->size(); ++i) ds->load(i, 3);
    decode_rates.push_back(ds->size() / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const double ours = median(rates), ours_decode = median(decode_rates);
  auto theirs = run_python(fmt::format("{} {}/bench/data_pipeline.py {} --epochs {} --interpolation {}", python,
                                       NEPA_SOURCE_DIR, (root / "c").string(), epochs, interpolation));
  fmt::print("decode + RandomResizedCrop(224, {}) + flip + normalise, 1 thread, {} JPEGs, {:.0f} KB on average:\n",
             interpolation, ds->size(), bytes / 1024.0 / ds->size());
  fmt::print("  {:<22} {:>10} {:>14}\n", "", "pipeline", "decode only");
  fmt::print("  {:<22} {:>8.1f}/s {:>12.1f}/s\n", "ours", ours, ours_decode);
  if (theirs.count("img_per_s")) {
    fmt::print("  {:<22} {:>8.1f}/s {:>12.1f}/s\n", "torchvision + PIL", theirs["img_per_s"],
               theirs["decode_img_per_s"]);
    fmt::print("  {:<22} {:>9.2f}x {:>13.2f}x\n", "ratio ours/theirs", ours / theirs["img_per_s"],
               ours_decode / theirs["decode_img_per_s"]);
  }
  fs::remove_all(root);  // a given folder is only linked: removing the link leaves it alone
  return theirs.count("img_per_s") ? 0 : 1;
}
