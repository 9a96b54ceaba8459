#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "nepa/data/dataset.h"
#include "nepa/data/fashion_mnist.h"
#include "test_util.h"

namespace nepa {
namespace {
namespace fs = std::filesystem;

void spit(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

cv::Mat textured(int w, int h, int seed) {
  cv::Mat m(h, w, CV_8UC3);
  cv::randu(m, cv::Scalar::all(0), cv::Scalar::all(255));
  m += cv::Scalar(seed * 20 % 255, 0, 0);
  return m;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Classes "zeta", "alpha", "Mid" (Python's sorted(): "Mid" < "alpha" < "zeta"), PNG and JPEG files, an upper-case
// extension, a nested folder and a file that is not an image.
void write_tree(const fs::path& root) {
  for (const char* cls : {"zeta", "alpha", "Mid"}) fs::create_directories(root / cls);
  ASSERT_TRUE(cv::imwrite((root / "zeta" / "b.png").string(), textured(20, 16, 1)));
  ASSERT_TRUE(cv::imwrite((root / "zeta" / "a.jpg").string(), textured(20, 16, 2)));
  ASSERT_TRUE(cv::imwrite((root / "alpha" / "x.JPG").string(), textured(24, 18, 3)));
  fs::create_directories(root / "alpha" / "sub");
  ASSERT_TRUE(cv::imwrite((root / "alpha" / "sub" / "a.png").string(), textured(8, 8, 4)));
  ASSERT_TRUE(cv::imwrite((root / "alpha" / "y.png").string(), textured(9, 7, 5)));
  ASSERT_TRUE(cv::imwrite((root / "Mid" / "m.jpeg").string(), textured(30, 20, 6)));
  spit(root / "Mid" / "README.txt", "not part of the set\n");
}

TEST(ImageFolder, ClassesAreSortedFolderNamesAndFilesFollowTorchvisionOrder) {
  test::TempDir dir;
  write_tree(dir.path() / "train");
  auto ds = make_image_folder((dir.path() / "train").string());
  ASSERT_EQ(ds->size(), 6);
  EXPECT_EQ(ds->num_classes(), 3);
  // sorted(os.walk(class_dir)): a folder's own files before its sub-folders' files.
  const std::vector<std::pair<std::string, int64_t>> expected = {
      {"Mid/m.jpeg", 0}, {"alpha/x.JPG", 1}, {"alpha/y.png", 1}, {"alpha/sub/a.png", 1}, {"zeta/a.jpg", 2},
      {"zeta/b.png", 2}};
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(ds->describe(i), (dir.path() / "train" / expected[i].first).string()) << i;
    EXPECT_EQ(ds->label(i), expected[i].second) << i;
  }
  EXPECT_EQ(ds->describe_set(), (dir.path() / "train").string());
  const cv::Mat m = ds->load(0, 3);
  EXPECT_EQ(m.size(), cv::Size(30, 20));
  EXPECT_EQ(m.type(), CV_8UC3);
  EXPECT_EQ(ds->load(3, 1).type(), CV_8UC1);

  // make_dataset reads <root>/<split>.
  DataConfig c;
  c.dataset = "image_folder";
  c.root = dir.path().string();
  EXPECT_EQ(make_dataset(c, "train")->size(), 6);
  const std::string msg = test::error_of<DataError>([&] { make_dataset(c, "val"); });
  EXPECT_TRUE(contains(msg, (dir.path() / "val").string())) << msg;
}

TEST(ImageFolder, ColoursComeBackInRgbOrderAndGreyIsReplicated) {
  test::TempDir dir;
  const fs::path cls = dir.path() / "set" / "c";
  fs::create_directories(cls);
  // OpenCV writes BGR: Scalar(0, 0, 255) is pure red.
  ASSERT_TRUE(cv::imwrite((cls / "1_red.png").string(), cv::Mat(4, 4, CV_8UC3, cv::Scalar(0, 0, 255))));
  ASSERT_TRUE(cv::imwrite((cls / "2_red.jpg").string(), cv::Mat(16, 16, CV_8UC3, cv::Scalar(0, 0, 255))));
  cv::Mat grey(5, 6, CV_8UC1);
  for (int i = 0; i < 30; ++i) grey.data[i] = static_cast<uint8_t>(i * 8);
  ASSERT_TRUE(cv::imwrite((cls / "3_grey.png").string(), grey));
  auto ds = make_image_folder((dir.path() / "set").string());
  ASSERT_EQ(ds->size(), 3);

  EXPECT_EQ(ds->load(0, 3).at<cv::Vec3b>(2, 2), cv::Vec3b(255, 0, 0));
  const cv::Vec3b jpeg = ds->load(1, 3).at<cv::Vec3b>(8, 8);
  EXPECT_GT(jpeg[0], 240);
  EXPECT_LT(jpeg[1], 15);
  EXPECT_LT(jpeg[2], 15);

  const cv::Mat rgb = ds->load(2, 3), one = ds->load(2, 1);
  ASSERT_EQ(rgb.type(), CV_8UC3);
  ASSERT_EQ(one.type(), CV_8UC1);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 6; ++x) {
      const uint8_t v = grey.at<uint8_t>(y, x);
      EXPECT_EQ(one.at<uint8_t>(y, x), v);
      EXPECT_EQ(rgb.at<cv::Vec3b>(y, x), cv::Vec3b(v, v, v));
    }
  EXPECT_THROW(ds->load(0, 2), std::invalid_argument);
}

TEST(ImageFolder, FileListRestrictsTheSetAndBadRootsAreNamed) {
  test::TempDir dir;
  write_tree(dir.path() / "train");
  const std::string list = dir.write("list.txt", "zeta/b.png\r\nalpha/sub/a.png\n\nMid/m.jpeg  \n");
  auto ds = make_image_folder((dir.path() / "train").string(), list);
  ASSERT_EQ(ds->size(), 3);
  EXPECT_TRUE(contains(ds->describe(0), "Mid/m.jpeg"));
  EXPECT_TRUE(contains(ds->describe(1), "alpha/sub/a.png"));
  EXPECT_TRUE(contains(ds->describe(2), "zeta/b.png"));
  EXPECT_EQ(ds->num_classes(), 3);  // classes stay those of the folder, so labels keep their meaning
  EXPECT_EQ(ds->label(0), 0);
  EXPECT_EQ(ds->label(1), 1);
  EXPECT_EQ(ds->label(2), 2);

  // A listed file that is not there is an error (a wrong root or list), naming it.
  const std::string bad_list = dir.write("bad.txt", "zeta/b.png\nzeta/gone.png\n");
  std::string msg = test::error_of<DataError>([&] { make_image_folder((dir.path() / "train").string(), bad_list); });
  EXPECT_TRUE(contains(msg, "zeta/gone.png") && contains(msg, bad_list)) << msg;

  const std::string missing = dir.file("nowhere");
  msg = test::error_of<DataError>([&] { make_image_folder(missing); });
  EXPECT_TRUE(contains(msg, missing)) << msg;
  fs::create_directories(dir.path() / "empty");
  msg = test::error_of<DataError>([&] { make_image_folder(dir.file("empty")); });
  EXPECT_TRUE(contains(msg, "no class folders") && contains(msg, dir.file("empty"))) << msg;
  fs::create_directories(dir.path() / "hollow" / "cls");
  msg = test::error_of<DataError>([&] { make_image_folder(dir.file("hollow")); });
  EXPECT_TRUE(contains(msg, "no images") && contains(msg, dir.file("hollow"))) << msg;
}

// Decoders return a partly grey picture for a cut-off file; load() must refuse it instead.
TEST(ImageFolder, TruncatedEmptyAndFakeImagesThrowDataErrorNamingTheFile) {
  test::TempDir dir;
  const fs::path cls = dir.path() / "set" / "c";
  fs::create_directories(cls);
  ASSERT_TRUE(cv::imwrite((cls / "good.jpg").string(), textured(64, 48, 1)));
  ASSERT_TRUE(cv::imwrite((cls / "good.png").string(), textured(64, 48, 2)));
  const std::string jpg = test::slurp(cls / "good.jpg"), png = test::slurp(cls / "good.png");
  ASSERT_EQ(static_cast<uint8_t>(jpg[jpg.size() - 2]), 0xFF);
  ASSERT_EQ(static_cast<uint8_t>(jpg.back()), 0xD9);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"cut_10.jpg", jpg.substr(0, jpg.size() / 10)},
      {"cut_50.jpg", jpg.substr(0, jpg.size() / 2)},
      {"cut_99.jpg", jpg.substr(0, jpg.size() - 3)},
      {"cut_eoi.jpg", jpg.substr(0, jpg.size() - 2)},
      {"cut_50.png", png.substr(0, png.size() / 2)},
      {"cut_iend.png", png.substr(0, png.size() - 12)},
      {"zero.jpg", ""},
      {"notes.png", "this is not an image\n"},
      {"header_only.jpg", "\xFF\xD8\xFF"},
  };
  for (const auto& [name, bytes] : bad) spit(cls / name, bytes);
  // Bytes after the end-of-image marker (camera trailers, padding) are accepted, as PIL accepts them.
  spit(cls / "trailer.jpg", jpg + std::string(16, '\0') + "TRAILER\xFF\xD8 data");
  auto ds = make_image_folder((dir.path() / "set").string());
  ASSERT_EQ(ds->size(), static_cast<int64_t>(bad.size()) + 3);
  int refused = 0;
  for (int64_t i = 0; i < ds->size(); ++i) {
    const std::string path = ds->describe(i), name = fs::path(path).filename().string();
    if (name == "good.jpg" || name == "good.png" || name == "trailer.jpg") {
      EXPECT_EQ(ds->load(i, 3).size(), cv::Size(64, 48)) << name;
      continue;
    }
    const std::string msg = test::error_of<DataError>([&] { ds->load(i, 3); });
    EXPECT_TRUE(contains(msg, path)) << msg;
    ++refused;
  }
  EXPECT_EQ(refused, static_cast<int>(bad.size()));
  // The reason is in the message.
  const std::map<std::string, std::string> reasons = {
      {"cut_50.jpg", "truncated JPEG"}, {"cut_50.png", "truncated PNG"}, {"zero.jpg", "empty file"}};
  for (int64_t i = 0; i < ds->size(); ++i) {
    auto it = reasons.find(fs::path(ds->describe(i)).filename().string());
    if (it == reasons.end()) continue;
    const std::string msg = test::error_of<DataError>([&] { ds->load(i, 1); });
    EXPECT_TRUE(contains(msg, it->second)) << msg;
  }
}

// An 8x8 pure-red CMYK JPEG with an Adobe marker (written by Pillow): libjpeg cannot turn CMYK into RGB itself.
const char kCmykRedJpeg[] =
    "\xff\xd8\xff\xee\x00\x0e\x41\x64\x6f\x62\x65\x00\x64\x00\x00\x00\x00\x00\xff\xdb\x00\x43\x00\x02\x01\x01\x01\x01"
    "\x01\x02\x01\x01\x01\x02\x02\x02\x02\x02\x04\x03\x02\x02\x02\x02\x05\x04\x04\x03\x04\x06\x05\x06\x06\x06\x05\x06"
    "\x06\x06\x07\x09\x08\x06\x07\x09\x07\x06\x06\x08\x0b\x08\x09\x0a\x0a\x0a\x0a\x0a\x06\x08\x0b\x0c\x0b\x0a\x0c\x09"
    "\x0a\x0a\x0a\xff\xc0\x00\x14\x08\x00\x08\x00\x08\x04\x43\x11\x00\x4d\x11\x00\x59\x11\x00\x4b\x11\x00\xff\xc4\x00"
    "\x1f\x00\x00\x01\x05\x01\x01\x01\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09"
    "\x0a\x0b\xff\xc4\x00\xb5\x10\x00\x02\x01\x03\x03\x02\x04\x03\x05\x05\x04\x04\x00\x00\x01\x7d\x01\x02\x03\x00\x04"
    "\x11\x05\x12\x21\x31\x41\x06\x13\x51\x61\x07\x22\x71\x14\x32\x81\x91\xa1\x08\x23\x42\xb1\xc1\x15\x52\xd1\xf0\x24"
    "\x33\x62\x72\x82\x09\x0a\x16\x17\x18\x19\x1a\x25\x26\x27\x28\x29\x2a\x34\x35\x36\x37\x38\x39\x3a\x43\x44\x45\x46"
    "\x47\x48\x49\x4a\x53\x54\x55\x56\x57\x58\x59\x5a\x63\x64\x65\x66\x67\x68\x69\x6a\x73\x74\x75\x76\x77\x78\x79\x7a"
    "\x83\x84\x85\x86\x87\x88\x89\x8a\x92\x93\x94\x95\x96\x97\x98\x99\x9a\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xb2\xb3"
    "\xb4\xb5\xb6\xb7\xb8\xb9\xba\xc2\xc3\xc4\xc5\xc6\xc7\xc8\xc9\xca\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xe1\xe2\xe3"
    "\xe4\xe5\xe6\xe7\xe8\xe9\xea\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xff\xda\x00\x0e\x04\x43\x00\x4d\x00\x59\x00"
    "\x4b\x00\x00\x3f\x00\xfd\xfc\xaf\xe7\xfe\xbf\x9f\xfa\xfd\xfc\xaf\xff\xd9";

// JPEGs are decoded by libjpeg directly; the result must be what OpenCV's decoder gives, in RGB order.
TEST(ImageFolder, JpegDecodingMatchesOpenCvForColourGreyAndCmyk) {
  test::TempDir dir;
  const fs::path cls = dir.path() / "set" / "c";
  fs::create_directories(cls);
  cv::Mat grey(37, 53, CV_8UC1);
  cv::randu(grey, 0, 255);
  ASSERT_TRUE(cv::imwrite((cls / "1_colour.jpg").string(), textured(333, 250, 7), {cv::IMWRITE_JPEG_QUALITY, 85}));
  ASSERT_TRUE(cv::imwrite((cls / "2_grey.jpg").string(), grey));
  ASSERT_TRUE(
      cv::imwrite((cls / "3_progressive.jpg").string(), textured(64, 40, 8), {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  spit(cls / "4_cmyk.jpg", std::string(kCmykRedJpeg, sizeof(kCmykRedJpeg) - 1));
  auto ds = make_image_folder((dir.path() / "set").string());
  ASSERT_EQ(ds->size(), 4);
  for (int64_t i = 0; i < 3; ++i) {
    const std::string path = ds->describe(i);
    cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR), rgb, one = cv::imread(path, cv::IMREAD_GRAYSCALE);
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    const cv::Mat ours = ds->load(i, 3), ours_one = ds->load(i, 1);
    ASSERT_EQ(ours.size(), rgb.size()) << path;
    ASSERT_EQ(ours.type(), CV_8UC3);
    ASSERT_EQ(ours_one.type(), CV_8UC1);
    EXPECT_EQ(cv::norm(ours, rgb, cv::NORM_INF), 0.0) << path;
    EXPECT_EQ(cv::norm(ours_one, one, cv::NORM_INF), 0.0) << path;
  }
  const cv::Mat cmyk = ds->load(3, 3);
  ASSERT_EQ(cmyk.size(), cv::Size(8, 8));
  const cv::Vec3b px = cmyk.at<cv::Vec3b>(4, 4);
  EXPECT_GT(px[0], 250);
  EXPECT_LT(px[1], 5);
  EXPECT_LT(px[2], 5);
  EXPECT_EQ(ds->load(3, 1).type(), CV_8UC1);
}

// A PNG written by hand (colour types OpenCV cannot write): `rows` unfiltered scanlines of `bit_depth`-bit
// samples, with optional PLTE and tRNS chunks.
std::string png_file(int w, int h, int bit_depth, int color_type, const std::string& rows, const std::string& plte = "",
                     const std::string& trns = "") {
  auto be32 = [](uint32_t v) {
    return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                       static_cast<char>(v)};
  };
  auto chunk = [&](const std::string& type, const std::string& data) {
    const std::string body = type + data;
    const uint32_t crc = static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(body.data()), body.size()));
    return be32(static_cast<uint32_t>(data.size())) + body + be32(crc);
  };
  uLongf n = compressBound(rows.size());
  std::string z(n, '\0');
  compress(reinterpret_cast<Bytef*>(z.data()), &n, reinterpret_cast<const Bytef*>(rows.data()), rows.size());
  z.resize(n);
  std::string ihdr = be32(w) + be32(h) + std::string{static_cast<char>(bit_depth), static_cast<char>(color_type), 0, 0, 0};
  std::string out = "\x89PNG\r\n\x1a\n" + chunk("IHDR", ihdr);
  if (!plte.empty()) out += chunk("PLTE", plte);
  if (!trns.empty()) out += chunk("tRNS", trns);
  return out + chunk("IDAT", z) + chunk("IEND", "");
}

// PNGs go through libpng directly: pixel for pixel what cv::imdecode gives for every colour type and depth, and a
// damaged one is a DataError carrying libpng's reason, with nothing printed by libpng itself.
TEST(ImageFolder, PngDecodingMatchesOpenCvAndLibpngStaysQuiet) {
  test::TempDir dir;
  const fs::path cls = dir.path() / "set" / "c";
  fs::create_directories(cls);
  cv::Mat grey(21, 30, CV_8UC1), grey16(9, 11, CV_16UC1), rgb16(12, 10, CV_16UC3), rgba(13, 17, CV_8UC4);
  cv::randu(grey, 0, 255);
  cv::randu(grey16, 0, 65535);
  cv::randu(rgb16, 0, 65535);
  cv::randu(rgba, 0, 255);
  ASSERT_TRUE(cv::imwrite((cls / "1_rgb.png").string(), textured(33, 25, 3)));
  ASSERT_TRUE(cv::imwrite((cls / "2_grey.png").string(), grey));
  ASSERT_TRUE(cv::imwrite((cls / "3_grey16.png").string(), grey16));
  ASSERT_TRUE(cv::imwrite((cls / "4_rgb16.png").string(), rgb16));
  ASSERT_TRUE(cv::imwrite((cls / "5_rgba.png").string(), rgba));
  // 1-bit grey, 5 x 2: one filter byte and one packed byte per row.
  spit(cls / "6_grey1.png", png_file(5, 2, 1, 0, std::string("\0\xa8\0\x50", 4)));
  // An 8-bit palette of three colours with transparency on the first (dropped, as OpenCV and PIL do).
  spit(cls / "7_palette.png", png_file(3, 2, 8, 3, std::string("\0\0\1\2\0\2\1\0", 8),
                                       std::string("\xff\0\0\0\xff\0\0\0\xff", 9), std::string("\x10", 1)));
  auto ds = make_image_folder((dir.path() / "set").string());
  ASSERT_EQ(ds->size(), 7);
  for (int64_t i = 0; i < ds->size(); ++i) {
    const std::string path = ds->describe(i);
    cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR), rgb;
    ASSERT_FALSE(bgr.empty()) << path;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    const cv::Mat ours = ds->load(i, 3);
    ASSERT_EQ(ours.size(), rgb.size()) << path;
    ASSERT_EQ(ours.type(), CV_8UC3) << path;
    EXPECT_EQ(cv::norm(ours, rgb, cv::NORM_INF), 0.0) << path;
    const cv::Mat one = cv::imread(path, cv::IMREAD_GRAYSCALE), ours_one = ds->load(i, 1);
    ASSERT_EQ(ours_one.type(), CV_8UC1) << path;
    EXPECT_EQ(cv::norm(ours_one, one, cv::NORM_INF), 0.0) << path;
  }
  // Damage: a flipped byte inside IDAT (the chunk chain is whole, so only the decoder can tell).
  std::string bytes = test::slurp(cls / "1_rgb.png");
  const size_t idat = bytes.find("IDAT");
  ASSERT_NE(idat, std::string::npos);
  bytes[idat + 10] = static_cast<char>(bytes[idat + 10] ^ 0x55);
  spit(cls / "1_rgb.png", bytes);
  testing::internal::CaptureStderr();
  const std::string msg = test::error_of<DataError>([&] { ds->load(0, 3); });
  const std::string printed = testing::internal::GetCapturedStderr();
  EXPECT_EQ(msg.rfind(ds->describe(0) + ": cannot decode PNG (", 0), 0u) << msg;
  EXPECT_NE(msg.find("(IDAT: "), std::string::npos) << msg;  // libpng names the chunk
  EXPECT_EQ(printed, "") << "libpng printed on its own";
}

TEST(FashionMnist, TheDebianFilesLoadAsTheRawTensor) {
  ASSERT_TRUE(fs::exists(kDefaultFashionMnistRoot))
      << kDefaultFashionMnistRoot << " is missing: scripts/setup.sh installs Debian's dataset-fashion-mnist";
  auto train = make_fashion_mnist("", "train");
  auto test_split = make_fashion_mnist("", "test");
  EXPECT_EQ(train->size(), 60000);
  EXPECT_EQ(test_split->size(), 10000);
  EXPECT_EQ(train->num_classes(), 10);
  std::vector<int64_t> per_class(10, 0);
  for (int64_t i = 0; i < train->size(); ++i) {
    const int64_t l = train->label(i);
    ASSERT_TRUE(l >= 0 && l < 10) << i << ": " << l;
    ++per_class[l];
  }
  for (int64_t n : per_class) EXPECT_EQ(n, 6000);  // Fashion-MNIST is balanced
  const auto raw = load_fashion_mnist("", "test");
  for (int64_t i : {0, 1234, 9999}) {
    const cv::Mat m = test_split->load(i, 1);
    ASSERT_EQ(m.size(), cv::Size(28, 28));
    ASSERT_TRUE(m.isContinuous());
    EXPECT_TRUE(torch::equal(torch::from_blob(m.data, {28, 28}, torch::kUInt8), raw.images[i])) << i;
    EXPECT_EQ(test_split->label(i), raw.labels[i].item<int64_t>());
    const cv::Mat rgb = test_split->load(i, 3);
    ASSERT_EQ(rgb.type(), CV_8UC3);
    std::vector<cv::Mat> planes;
    cv::split(rgb, planes);
    for (const auto& p : planes) EXPECT_EQ(cv::norm(p, m, cv::NORM_INF), 0.0);
  }
  EXPECT_TRUE(contains(test_split->describe(7), "7"));
  EXPECT_TRUE(contains(test::error_of<DataError>([] { make_fashion_mnist("/nonexistent/fmnist", "train"); }),
                       "/nonexistent/fmnist"));
}

TEST(Synthetic, ImagesAreAFunctionOfIndexAndSplit) {
  auto a = make_synthetic(30, 12, "train"), b = make_synthetic(30, 12, "train"), v = make_synthetic(30, 12, "val");
  EXPECT_EQ(a->size(), 30);
  EXPECT_EQ(a->num_classes(), 10);
  for (int64_t i : {0, 7, 29}) {
    EXPECT_EQ(a->label(i), i % 10);
    const cv::Mat x = a->load(i, 3);
    ASSERT_EQ(x.size(), cv::Size(12, 12));
    ASSERT_EQ(x.type(), CV_8UC3);
    EXPECT_EQ(cv::norm(x, b->load(i, 3), cv::NORM_INF), 0.0);  // another instance, same pixels
    EXPECT_GT(cv::norm(x, v->load(i, 3), cv::NORM_INF), 0.0);  // another split, other pixels
    EXPECT_EQ(a->load(i, 1).type(), CV_8UC1);
  }
  EXPECT_GT(cv::norm(a->load(1, 3), a->load(2, 3), cv::NORM_INF), 0.0);
  DataConfig c;
  c.dataset = "synthetic";
  c.synthetic_size = 17;
  c.image_size = 9;
  EXPECT_EQ(make_dataset(c, "train")->size(), 17);
  c.dataset = "cifar";
  EXPECT_TRUE(contains(test::error_of<DataError>([&] { make_dataset(c, "train"); }), "cifar"));
}

}  // namespace
}  // namespace nepa
