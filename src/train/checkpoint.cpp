#include "nepa/train/checkpoint.h"

#include <ATen/Context.h>
#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <set>

#include "nepa/io/atomic_file.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"

namespace nepa {
namespace fs = std::filesystem;

namespace {

constexpr const char* kKind = "nepa-train-checkpoint-v1";

// "decay:a,b,c;no_decay:d,e" — checked on load so a checkpoint never feeds moments to the wrong parameter.
std::string group_layout(const std::vector<ParamGroup>& groups) {
  std::string out;
  for (const auto& g : groups) {
    out += (out.empty() ? "" : ";") + g.name + ":";
    for (size_t i = 0; i < g.param_names.size(); ++i) out += (i ? "," : "") + g.param_names[i];
  }
  return out;
}

std::string optim_key(size_t group, size_t index, const char* what) {
  return fmt::format("optim.{}.{}.{}", group, index, what);
}

int64_t meta_int(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& path) {
  auto it = meta.find(key);
  if (it == meta.end()) throw CheckpointError(path + ": not a NEPA training checkpoint (no " + key + ")");
  return std::stoll(it->second);
}

CheckpointContent info_from_metadata(const std::map<std::string, std::string>& meta, const std::string& path) {
  auto kind = meta.find("nepa.kind");
  if (kind == meta.end() || kind->second != kKind)
    throw CheckpointError(path + ": not a NEPA training checkpoint (metadata nepa.kind is not " + kKind + ")");
  CheckpointContent c;
  c.state.step = meta_int(meta, "nepa.step", path);
  c.state.epoch = meta_int(meta, "nepa.epoch", path);
  c.state.batch = meta_int(meta, "nepa.batch", path);
  c.state.samples_seen = meta_int(meta, "nepa.samples_seen", path);
  c.state.world_size = meta.count("nepa.world_size") ? meta_int(meta, "nepa.world_size", path) : 0;
  auto cfg = meta.find("nepa.config");
  if (cfg != meta.end()) c.config_yaml = cfg->second;
  return c;
}

std::string rng_key(int rank, const char* kind) { return fmt::format("rng.{}.{}", rank, kind); }

at::Generator cpu_generator() { return at::globalContext().defaultGenerator(at::kCPU); }
// The default generator of `device` (no index: the current GPU's).
at::Generator cuda_generator(const torch::Device& device) {
  return at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, device.has_index() ? device.index() : -1));
}

torch::Tensor state_of(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_state(at::Generator gen, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

// Sets this process's generators from `cpu` and, on a GPU, `cuda` (a CPU checkpoint resumed on a GPU leaves the
// GPU's generator as seeded). Returns whether `cpu` was there.
bool restore(const std::map<std::string, torch::Tensor>& tensors, const std::string& cpu, const std::string& cuda,
             const torch::Device& device) {
  auto c = tensors.find(cpu);
  if (c == tensors.end()) return false;
  set_state(cpu_generator(), c->second);
  if (device.is_cuda())
    if (auto g = tensors.find(cuda); g != tensors.end()) set_state(cuda_generator(device), g->second);
  return true;
}

}  // namespace

std::map<std::string, torch::Tensor> generator_states(int rank, const torch::Device& device) {
  std::map<std::string, torch::Tensor> states = {{rng_key(rank, "cpu"), state_of(cpu_generator())}};
  if (device.is_cuda()) states[rng_key(rank, "cuda")] = state_of(cuda_generator(device));
  return states;
}

void set_generator_states(const std::map<std::string, torch::Tensor>& states, int rank, const torch::Device& device) {
  if (!restore(states, rng_key(rank, "cpu"), rng_key(rank, "cuda"), device))
    throw std::invalid_argument(fmt::format("set_generator_states: no {}", rng_key(rank, "cpu")));
}

void save_checkpoint(const std::string& path, const torch::nn::Module& model, const AdamW& optimizer,
                     const std::vector<ParamGroup>& groups, const TrainState& state, const std::string& config_yaml,
                     const std::map<std::string, torch::Tensor>& extra,
                     const std::map<std::string, torch::Tensor>& generators) {
  std::map<std::string, torch::Tensor> tensors = state_dict(model, "model.");
  if (optimizer.num_groups() != groups.size())
    throw CheckpointError(fmt::format("{}: optimizer has {} groups, {} described", path, optimizer.num_groups(), groups.size()));
  for (size_t g = 0; g < optimizer.num_groups(); ++g) {
    for (size_t i = 0; i < optimizer.params(g).size(); ++i) {
      const AdamW::ParamState* st = optimizer.state(g, i);
      if (!st) continue;  // never stepped
      tensors[optim_key(g, i, "exp_avg")] = st->exp_avg;
      tensors[optim_key(g, i, "exp_avg_sq")] = st->exp_avg_sq;
      tensors[optim_key(g, i, "step")] = torch::full({1}, st->steps, torch::kInt64);
    }
  }
  for (const auto& [name, t] : extra) tensors["extra." + name] = t;
  for (const auto& [name, t] : generators) {
    if (name.rfind("rng.", 0) != 0) throw CheckpointError(path + ": generator state '" + name + "' is not named rng.*");
    tensors[name] = t;
  }
  std::map<std::string, std::string> meta = {
      {"format", "pt"},
      {"nepa.kind", kKind},
      {"nepa.step", std::to_string(state.step)},
      {"nepa.epoch", std::to_string(state.epoch)},
      {"nepa.batch", std::to_string(state.batch)},
      {"nepa.samples_seen", std::to_string(state.samples_seen)},
      {"nepa.world_size", std::to_string(state.world_size)},
      {"nepa.optim_layout", group_layout(groups)},
      {"nepa.config", config_yaml},
  };
  save_safetensors(path, tensors, meta);
}

CheckpointContent read_checkpoint_info(const std::string& path) {
  try {
    return info_from_metadata(read_safetensors_header(path).metadata, path);
  } catch (const SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
}

CheckpointContent load_checkpoint(const std::string& path, torch::nn::Module& model, AdamW& optimizer,
                                  const std::vector<ParamGroup>& groups, int rank, const torch::Device& device) {
  std::map<std::string, std::string> meta;
  std::map<std::string, torch::Tensor> tensors;
  try {
    tensors = load_safetensors(path, &meta);
  } catch (const SafetensorsError& e) {
    throw CheckpointError(e.what());
  }
  CheckpointContent content = info_from_metadata(meta, path);

  // Every check before the first change.
  std::string layout = meta.count("nepa.optim_layout") ? meta.at("nepa.optim_layout") : "";
  if (layout != group_layout(groups))
    throw CheckpointError(path + ": optimizer parameter groups differ from this run's (different model or "
                          "param-group rules); cannot resume");
  std::map<std::string, torch::Tensor> model_tensors;
  for (const auto& [name, t] : tensors) {
    if (name.rfind("model.", 0) == 0) model_tensors[name] = t;
    else if (name.rfind("extra.", 0) == 0) content.extra[name.substr(6)] = t;
  }
  for (size_t g = 0; g < optimizer.num_groups(); ++g) {
    const auto& params = optimizer.params(g);
    for (size_t i = 0; i < params.size(); ++i) {
      auto m = tensors.find(optim_key(g, i, "exp_avg"));
      if (m == tensors.end()) continue;
      for (const char* what : {"exp_avg_sq", "step"})
        if (!tensors.count(optim_key(g, i, what)))
          throw CheckpointError(path + ": " + optim_key(g, i, what) + " missing");
      if (m->second.sizes() != params[i].sizes() || tensors.at(optim_key(g, i, "exp_avg_sq")).sizes() != params[i].sizes())
        throw CheckpointError(fmt::format("{}: {} has shape {} but parameter {} has {}", path, optim_key(g, i, "exp_avg"),
                                          c10::str(m->second.sizes()), groups[g].param_names[i], c10::str(params[i].sizes())));
    }
  }
  try {
    load_state_dict(model, model_tensors, /*strict=*/true, path, "model.");
  } catch (const std::runtime_error& e) {
    throw CheckpointError(e.what());
  }

  optimizer.clear_state();
  for (size_t g = 0; g < optimizer.num_groups(); ++g)
    for (size_t i = 0; i < optimizer.params(g).size(); ++i) {
      auto m = tensors.find(optim_key(g, i, "exp_avg"));
      if (m == tensors.end()) continue;
      optimizer.set_state(g, i, m->second, tensors.at(optim_key(g, i, "exp_avg_sq")),
                          tensors.at(optim_key(g, i, "step")).item<int64_t>());
    }
  // Checkpoints written before per-rank states hold one set ("rng.cpu", "rng.cuda.<index>"), rank 0's.
  if (restore(tensors, rng_key(rank, "cpu"), rng_key(rank, "cuda"), device))
    content.generators = GeneratorRestore::kOwn;
  else if (restore(tensors, "rng.cpu",
                   fmt::format("rng.cuda.{}", device.has_index() ? device.index() : c10::DeviceIndex{0}), device))
    content.generators = GeneratorRestore::kShared;
  return content;
}

CheckpointDir::CheckpointDir(std::string dir, int keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {}

std::string CheckpointDir::path_for_step(int64_t step) const {
  return (fs::path(dir_) / fmt::format("step_{:08d}.safetensors", step)).string();
}

std::string CheckpointDir::save(const torch::nn::Module& model, const AdamW& optimizer,
                                const std::vector<ParamGroup>& groups, const TrainState& state,
                                const std::string& config_yaml, const std::map<std::string, torch::Tensor>& extra,
                                const std::map<std::string, torch::Tensor>& generators) {
  fs::create_directories(dir_);
  std::string path = path_for_step(state.step);
  save_checkpoint(path, model, optimizer, groups, state, config_yaml, extra, generators);
  write_text_atomic((fs::path(dir_) / "latest").string(), fs::path(path).filename().string() + "\n");

  static const std::regex step_re(R"(step_(\d+)\.safetensors)");
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (const auto& e : fs::directory_iterator(dir_)) {
    std::string name = e.path().filename().string();
    std::smatch m;
    if (std::regex_match(name, m, step_re)) steps.emplace_back(std::stoll(m[1]), e.path());
  }
  remove_stale_temp_files();
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = static_cast<size_t>(keep_last_); i < steps.size(); ++i) fs::remove(steps[i].second);
  return path;
}

std::optional<std::string> CheckpointDir::latest() const {
  fs::path pointer = fs::path(dir_) / "latest";
  if (fs::exists(pointer)) {
    std::ifstream in(pointer);
    std::string name;
    std::getline(in, name);
    fs::path p = fs::path(dir_) / name;
    if (!name.empty() && fs::exists(p)) return p.string();
  }
  static const std::regex step_re(R"(step_(\d+)\.safetensors)");
  std::optional<std::pair<int64_t, std::string>> best;
  if (!fs::is_directory(dir_)) return std::nullopt;
  for (const auto& e : fs::directory_iterator(dir_)) {
    std::string name = e.path().filename().string();
    std::smatch m;
    if (std::regex_match(name, m, step_re) && (!best || std::stoll(m[1]) > best->first))
      best = std::make_pair(std::stoll(m[1]), e.path().string());
  }
  if (best) return best->second;
  return std::nullopt;
}

std::optional<std::string> CheckpointDir::newest_readable(std::vector<std::string>* unreadable) const {
  std::vector<std::pair<int64_t, std::string>> candidates;
  if (auto pointed = latest()) candidates.emplace_back(std::numeric_limits<int64_t>::max(), *pointed);
  static const std::regex step_re(R"(step_(\d+)\.safetensors)");
  if (fs::is_directory(dir_))
    for (const auto& e : fs::directory_iterator(dir_)) {
      std::string name = e.path().filename().string();
      std::smatch m;
      if (std::regex_match(name, m, step_re)) candidates.emplace_back(std::stoll(m[1]), e.path().string());
    }
  std::sort(candidates.rbegin(), candidates.rend());
  std::set<std::string> tried;
  for (const auto& [step, path] : candidates) {
    if (!tried.insert(path).second) continue;
    try {
      read_checkpoint_info(path);
      return path;
    } catch (const CheckpointError& e) {
      if (unreadable) unreadable->push_back(e.what());
    }
  }
  return std::nullopt;
}

int CheckpointDir::remove_stale_temp_files() const {
  static const std::regex tmp_re(R"(.*\.tmp\.(\d+))");
  int removed = 0;
  if (!fs::is_directory(dir_)) return 0;
  for (const auto& e : fs::directory_iterator(dir_)) {
    std::string name = e.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, tmp_re)) continue;
    const pid_t pid = static_cast<pid_t>(std::stoll(m[1]));
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its writer may still be at work
    std::error_code ec;
    if (fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

std::optional<std::string> resolve_resume(const std::string& resume, const std::string& run_dir,
                                          std::vector<std::string>* warnings) {
  if (resume.empty()) return std::nullopt;
  if (resume == "auto") {
    std::vector<std::string> unreadable;
    auto path = CheckpointDir((fs::path(run_dir) / "checkpoints").string(), 1).newest_readable(&unreadable);
    if (warnings)
      for (const auto& u : unreadable)
        warnings->push_back("skipping an unreadable checkpoint (" + u + ")" +
                            (path ? "; resuming from " + *path + " instead" : "; no readable checkpoint is left"));
    if (!path && !unreadable.empty())
      throw CheckpointError("--resume auto: no readable checkpoint in " + run_dir + "/checkpoints (" + unreadable.front() +
                            ")");
    return path;
  }
  fs::path p(resume);
  if (fs::is_directory(p)) {
    for (const fs::path& d : {p / "checkpoints", p}) {
      auto latest = CheckpointDir(d.string(), 1).latest();
      if (latest) return latest;
    }
    throw CheckpointError("--resume " + resume + ": no checkpoint in that directory");
  }
  if (!fs::exists(p)) throw CheckpointError("--resume " + resume + ": no such file");
  return p.string();
}

}  // namespace nepa
