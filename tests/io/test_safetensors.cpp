#include "nepa/io/safetensors.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <fstream>

#include "nepa/io/atomic_file.h"
#include "test_util.h"

using namespace nepa;
using nepa::test::error_of;
using nepa::test::TempDir;

namespace {
// A file with the given JSON header and `data_bytes` zero bytes of data.
std::string raw_file(const std::string& header, std::size_t data_bytes, uint64_t declared_len = UINT64_MAX) {
  uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

std::string load_error(const TempDir& d, const std::string& bytes) {
  std::string f = d.write("bad.safetensors", bytes);
  return error_of<SafetensorsError>([&] { load_safetensors(f); });
}
}  // namespace

TEST(Safetensors, RoundTripEveryDtypeAndShape) {
  TempDir d;
  torch::manual_seed(0);
  std::map<std::string, torch::Tensor> t = {
      {"f32", torch::randn({3, 4})},
      {"f16", torch::randn({5}).to(torch::kFloat16)},
      {"bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
      {"i64", torch::arange(7)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 6}).t()},  // non-contiguous input
  };
  save_safetensors(d.file("a.safetensors"), t, {{"format", "pt"}, {"note", "x\"y"}});
  std::map<std::string, std::string> meta;
  auto back = load_safetensors(d.file("a.safetensors"), &meta);
  ASSERT_EQ(back.size(), t.size());
  for (const auto& [k, v] : t) {
    ASSERT_TRUE(back.count(k)) << k;
    EXPECT_EQ(back[k].scalar_type(), v.scalar_type()) << k;
    EXPECT_EQ(back[k].sizes(), v.sizes()) << k;
    EXPECT_TRUE(torch::equal(back[k], v)) << k;
  }
  EXPECT_EQ(meta["note"], "x\"y");
  SafetensorsHeader h = read_safetensors_header(d.file("a.safetensors"));
  EXPECT_EQ(h.data_start % 8, 0u);  // data section aligned as the reference writer does
}

TEST(Safetensors, RejectsMalformedHeaders) {
  TempDir d;
  EXPECT_NE(load_error(d, "abc").find("file too short for a header length (3 bytes)"), std::string::npos);
  EXPECT_NE(load_error(d, raw_file("{}", 0, 1000)).find("header length 1000 exceeds the file size"), std::string::npos);
  EXPECT_NE(load_error(d, raw_file("{}", 0, 1ull << 40)).find("exceeds the 100 MB limit"), std::string::npos);
  EXPECT_NE(load_error(d, raw_file("[1, 2, 3]", 0)).find("header is not a JSON object"), std::string::npos);
  EXPECT_NE(load_error(d, raw_file("{\"a\": {\"dtype\": ", 0)).find("header is not valid JSON"), std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}})", 2))
                .find("tensor 'w' has unknown dtype 'Q4'"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", 8))
                .find("tensor 'w' has data_offsets [8, 0] with end before begin"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8))
                .find("tensor 'w' data_offsets end 16 is out of range (data section has 8 bytes)"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8))
                .find("tensor 'w' shape [3] of F32 needs 12 bytes but data_offsets span 8"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                                   R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                                   12))
                .find("tensors 'a' and 'b' overlap"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8))
                .find("tensor 'w' shape entries must be a non-negative integer"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "F32", "shape": [2]}})", 8))
                .find("tensor 'w' needs data_offsets [begin, end]"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296],)"
                                   R"( "data_offsets": [0, 8]}})",
                                   8))
                .find("tensor 'w' shape is too large"),
            std::string::npos);
  // Every message names the file.
  EXPECT_NE(load_error(d, "abc").find(d.file("bad.safetensors")), std::string::npos);
  // Strict JSON, as Python's safetensors: YAML flow syntax, comments, trailing commas and trailing text are not
  // JSON; metadata values are strings and shapes integers.
  for (const char* not_json : {"{format: pt}", "{\"__metadata__\": {\"a\": \"b\"},}", "{} # c", "{} {}",
                               "{'a': 1}"}) {
    EXPECT_NE(load_error(d, raw_file(not_json, 0)).find("header is not valid JSON"), std::string::npos) << not_json;
  }
  EXPECT_NE(load_error(d, raw_file(R"({"__metadata__": {"format": 1}})", 0))
                .find("__metadata__ value of 'format' is not a string"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}})", 8))
                .find("tensor 'w' shape entries must be a non-negative integer"),
            std::string::npos);
  EXPECT_NE(load_error(d, raw_file(R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", 8))
                .find("tensor 'w' shape entries must be a non-negative integer"),
            std::string::npos);
}

TEST(Safetensors, InterruptedWriteLeavesThePreviousFile) {
  TempDir d;
  std::string f = d.file("w.safetensors");
  save_safetensors(f, {{"x", torch::ones({3})}});
  EXPECT_THROW(write_file_atomic(f, [](std::FILE* out) {
                 std::fputs("partial", out);
                 throw std::runtime_error("killed mid-write");
               }),
               std::runtime_error);
  auto back = load_safetensors(f);
  EXPECT_TRUE(torch::equal(back.at("x"), torch::ones({3})));
  int leftovers = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.path())) leftovers += e.path().filename() != "w.safetensors";
  EXPECT_EQ(leftovers, 0);
}

// A write that the system refuses (here a file-size limit, EFBIG, standing in for a full disk) is an error that
// carries the system's reason, and leaves no partial file. In a child process: the limit must not outlive it.
TEST(Safetensors, AFailedWriteSaysWhy) {
  TempDir d;
  const std::string path = d.file("big.safetensors"), report = d.file("report.txt");
  const pid_t child = ::fork();
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);  // the write then fails with EFBIG instead of killing the process
    rlimit limit{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    std::string what = "no error";
    try {
      save_safetensors(path, {{"w", torch::zeros({100000})}});
    } catch (const std::exception& e) {
      what = e.what();
    }
    std::FILE* f = std::fopen(report.c_str(), "w");
    std::fputs(what.c_str(), f);
    std::fclose(f);
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::ifstream in(report);
  const std::string what((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(what.find(path), std::string::npos) << what;
  EXPECT_NE(what.find("File too large"), std::string::npos) << what;
  EXPECT_FALSE(std::filesystem::exists(path));
  int leftovers = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.path())) leftovers += e.path().filename() != "report.txt";
  EXPECT_EQ(leftovers, 0);
}
