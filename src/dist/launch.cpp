#include "nepa/dist/launch.h"

#include <cctype>
#include <cstdlib>
#include <vector>

namespace nepa::dist {

namespace {

int parse_int(const std::string& name, const std::string& value, int min) {
  size_t used = 0;
  long v = 0;
  try {
    v = std::stol(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || v < min || v > 1 << 24)
    throw DistError("launch: environment variable " + name + "=" + value + " is not an integer >= " +
                    std::to_string(min));
  return static_cast<int>(v);
}

// SLURM_TASKS_PER_NODE style: "8(x2),4" -> {8, 8, 4}.
std::vector<int> expand_tasks_per_node(const std::string& name, const std::string& spec) {
  std::vector<int> out;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(pos, end - pos);
    const size_t paren = item.find("(x");
    const int count = parse_int(name, item.substr(0, paren), 1);
    int repeat = 1;
    if (paren != std::string::npos) {
      if (item.back() != ')') throw DistError("launch: cannot read " + name + "=" + spec);
      repeat = parse_int(name, item.substr(paren + 2, item.size() - paren - 3), 1);
    }
    out.insert(out.end(), repeat, count);
    pos = end + 1;
  }
  return out;
}

}  // namespace

std::string first_slurm_host(const std::string& nodelist) {
  // The first entry ends at a comma outside brackets; a bracket holds ranges "03-05" or single numbers.
  const size_t bracket = nodelist.find('[');
  const size_t comma = nodelist.find(',');
  if (bracket == std::string::npos || (comma != std::string::npos && comma < bracket))
    return nodelist.substr(0, comma);
  const std::string prefix = nodelist.substr(0, bracket);
  size_t i = bracket + 1;
  std::string first;
  while (i < nodelist.size() && std::isdigit(static_cast<unsigned char>(nodelist[i]))) first += nodelist[i++];
  if (first.empty()) throw DistError("launch: cannot read the SLURM node list '" + nodelist + "'");
  return prefix + first;
}

std::string store_prefix(const Launch& launch) { return "nepa/" + std::to_string(launch.restart_count) + "/"; }

std::string device_for_rank(const std::string& train_device, const Launch& launch, int cuda_device_count) {
  if (train_device.rfind("cuda", 0) != 0) return train_device;
  if (cuda_device_count <= 0)
    throw DistError("train.device is " + train_device + " but this process sees no CUDA device");
  if (train_device == "cuda") return "cuda:" + std::to_string(launch.local_rank % cuda_device_count);
  const int index = std::stoi(train_device.substr(5));
  if (launch.local_world_size > 1)
    throw DistError("train.device " + train_device + " with " + std::to_string(launch.local_world_size) +
                    " processes on this node: all of them would use GPU " + std::to_string(index) +
                    "; set train.device cuda (each process takes GPU local_rank % device_count)");
  if (index >= cuda_device_count)
    throw DistError("train.device " + train_device + " but this process sees " + std::to_string(cuda_device_count) +
                    " CUDA device(s)");
  return train_device;
}

Launch launch_from_env(const DistConfig& config, const Getenv& getenv_in) {
  Getenv getenv = getenv_in ? getenv_in : [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v || !*v) return std::nullopt;
    return std::string(v);
  };
  auto get_int = [&](const std::string& name, int min) -> std::optional<int> {
    auto v = getenv(name);
    if (!v) return std::nullopt;
    return parse_int(name, *v, min);
  };
  auto require = [&](const std::string& name, const std::string& launcher, int min) {
    auto v = get_int(name, min);
    if (!v) throw DistError("launch: " + launcher + " set some of its variables but not " + name);
    return *v;
  };

  Launch l;
  if (getenv("RANK") || getenv("WORLD_SIZE")) {
    l.launcher = "torchrun";
    l.rank = require("RANK", "the launcher", 0);
    l.world_size = require("WORLD_SIZE", "the launcher", 1);
    l.local_rank = get_int("LOCAL_RANK", 0).value_or(l.rank);
    l.local_world_size = get_int("LOCAL_WORLD_SIZE", 1).value_or(l.world_size);
    l.agent_store = getenv("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
    l.restart_count = get_int("TORCHELASTIC_RESTART_COUNT", 0).value_or(0);
    if (l.world_size > 1 && !getenv("MASTER_ADDR"))
      throw DistError("launch: RANK/WORLD_SIZE are set but MASTER_ADDR is not (torchrun sets all three)");
  } else if (getenv("SLURM_PROCID") && getenv("SLURM_NTASKS")) {
    l.launcher = "slurm";
    l.rank = require("SLURM_PROCID", "SLURM", 0);
    l.world_size = require("SLURM_NTASKS", "SLURM", 1);
    l.local_rank = get_int("SLURM_LOCALID", 0).value_or(0);
    // Tasks on this node: this step's layout first (srun), else the job's.
    const int node = get_int("SLURM_NODEID", 0).value_or(0);
    for (const char* name : {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
      if (auto spec = getenv(name)) {
        auto per_node = expand_tasks_per_node(name, *spec);
        if (node < static_cast<int>(per_node.size())) l.local_world_size = per_node[node];
        break;
      }
    }
    if (!getenv("MASTER_ADDR") && config.master_addr.empty()) {
      for (const char* name : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST"})
        if (auto list = getenv(name)) {
          l.master_addr = first_slurm_host(*list);
          break;
        }
    }
  } else {
    return l;  // a single process
  }
  if (!config.master_addr.empty()) l.master_addr = config.master_addr;
  if (auto addr = getenv("MASTER_ADDR")) l.master_addr = *addr;
  l.master_port = config.master_port;
  if (auto port = get_int("MASTER_PORT", 1)) l.master_port = *port;
  if (l.master_port > 65535) throw DistError("launch: MASTER_PORT " + std::to_string(l.master_port) + " > 65535");
  if (l.rank >= l.world_size)
    throw DistError("launch: rank " + std::to_string(l.rank) + " is not below the world size " +
                    std::to_string(l.world_size) + " (" + l.launcher + ")");
  if (l.local_rank >= l.local_world_size) l.local_world_size = l.local_rank + 1;
  return l;
}

}  // namespace nepa::dist
