#include <gtest/gtest.h>

#include <map>

#include "nepa/dist/launch.h"
#include "test_util.h"

namespace nepa::dist {
namespace {

Getenv env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(Launch, NoLauncherMeansOneProcess) {
  Launch l = launch_from_env(DistConfig{}, env_of({{"HOME", "/root"}}));
  EXPECT_EQ(l.world_size, 1);
  EXPECT_EQ(l.rank, 0);
  EXPECT_FALSE(l.distributed());
  EXPECT_EQ(l.launcher, "none");
}

TEST(Launch, TorchrunVariables) {
  Launch l = launch_from_env(DistConfig{}, env_of({{"RANK", "5"},
                                                   {"WORLD_SIZE", "16"},
                                                   {"LOCAL_RANK", "1"},
                                                   {"LOCAL_WORLD_SIZE", "8"},
                                                   {"MASTER_ADDR", "node7"},
                                                   {"MASTER_PORT", "29411"},
                                                   {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                                   // inside an allocation: torchrun's variables win
                                                   {"SLURM_PROCID", "0"},
                                                   {"SLURM_NTASKS", "2"}}));
  EXPECT_EQ(l.launcher, "torchrun");
  EXPECT_EQ(l.rank, 5);
  EXPECT_EQ(l.world_size, 16);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_world_size, 8);
  EXPECT_EQ(l.master_addr, "node7");
  EXPECT_EQ(l.master_port, 29411);
  EXPECT_TRUE(l.agent_store);
  EXPECT_TRUE(l.distributed());
}

TEST(Launch, SlurmVariablesWithTheMasterFromTheNodeList) {
  DistConfig c;
  c.master_port = 23456;
  Launch l = launch_from_env(c, env_of({{"SLURM_PROCID", "11"},
                                        {"SLURM_NTASKS", "16"},
                                        {"SLURM_LOCALID", "3"},
                                        {"SLURM_NODEID", "1"},
                                        {"SLURM_STEP_TASKS_PER_NODE", "8(x2)"},
                                        {"SLURM_STEP_NODELIST", "gpu[07-08]"},
                                        {"SLURM_JOB_NODELIST", "other[1-9]"}}));
  EXPECT_EQ(l.launcher, "slurm");
  EXPECT_EQ(l.rank, 11);
  EXPECT_EQ(l.world_size, 16);
  EXPECT_EQ(l.local_rank, 3);
  EXPECT_EQ(l.local_world_size, 8);
  EXPECT_EQ(l.master_addr, "gpu07");
  EXPECT_EQ(l.master_port, 23456);
  EXPECT_FALSE(l.agent_store);
  // dist.master_addr beats the node list, MASTER_ADDR / MASTER_PORT beat both.
  c.master_addr = "head";
  EXPECT_EQ(launch_from_env(c, env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_NODELIST", "a1"}}))
                .master_addr,
            "head");
  Launch m = launch_from_env(c, env_of({{"SLURM_PROCID", "0"},
                                        {"SLURM_NTASKS", "2"},
                                        {"MASTER_ADDR", "10.0.0.1"},
                                        {"MASTER_PORT", "1234"},
                                        {"SLURM_TASKS_PER_NODE", "4,2"},
                                        {"SLURM_NODEID", "1"}}));
  EXPECT_EQ(m.master_addr, "10.0.0.1");
  EXPECT_EQ(m.master_port, 1234);
  EXPECT_EQ(m.local_world_size, 2);
}

TEST(Launch, FirstHostOfSlurmNodeLists) {
  EXPECT_EQ(first_slurm_host("node1"), "node1");
  EXPECT_EQ(first_slurm_host("node1,node2"), "node1");
  EXPECT_EQ(first_slurm_host("gpu[03-05,09],cpu1"), "gpu03");
  EXPECT_EQ(first_slurm_host("a1,gpu[3-4]"), "a1");
  EXPECT_EQ(first_slurm_host("rack2-n[001]"), "rack2-n001");
  EXPECT_THROW(first_slurm_host("bad[x]"), DistError);
}

TEST(Launch, InconsistentVariablesAreNamed) {
  auto msg = test::error_of<DistError>(
      [] { launch_from_env(DistConfig{}, env_of({{"RANK", "0"}, {"MASTER_ADDR", "x"}})); });
  EXPECT_NE(msg.find("WORLD_SIZE"), std::string::npos) << msg;
  msg = test::error_of<DistError>([] {
    launch_from_env(DistConfig{}, env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}}));
  });
  EXPECT_NE(msg.find("rank 2 is not below the world size 2"), std::string::npos) << msg;
  msg = test::error_of<DistError>([] {
    launch_from_env(DistConfig{}, env_of({{"RANK", "0"}, {"WORLD_SIZE", "two"}, {"MASTER_ADDR", "x"}}));
  });
  EXPECT_NE(msg.find("WORLD_SIZE=two"), std::string::npos) << msg;
  msg = test::error_of<DistError>([] { launch_from_env(DistConfig{}, env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}})); });
  EXPECT_NE(msg.find("MASTER_ADDR"), std::string::npos) << msg;
  msg = test::error_of<DistError>([] {
    launch_from_env(DistConfig{},
                    env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}, {"MASTER_PORT", "70000"}}));
  });
  EXPECT_NE(msg.find("MASTER_PORT"), std::string::npos) << msg;
}

TEST(Launch, EachTorchrunAttemptHasItsOwnStorePrefix) {
  Launch first = launch_from_env(DistConfig{}, env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}));
  EXPECT_EQ(first.restart_count, 0);
  EXPECT_EQ(store_prefix(first), "nepa/0/");
  Launch again = launch_from_env(DistConfig{}, env_of({{"RANK", "0"},
                                                       {"WORLD_SIZE", "2"},
                                                       {"MASTER_ADDR", "h"},
                                                       {"TORCHELASTIC_RESTART_COUNT", "3"}}));
  EXPECT_EQ(again.restart_count, 3);
  EXPECT_EQ(store_prefix(again), "nepa/3/");
  EXPECT_THROW(launch_from_env(DistConfig{}, env_of({{"RANK", "0"},
                                                     {"WORLD_SIZE", "2"},
                                                     {"MASTER_ADDR", "h"},
                                                     {"TORCHELASTIC_RESTART_COUNT", "x"}})),
               DistError);
}

TEST(Launch, DeviceForRank) {
  Launch l;
  l.world_size = 16;
  l.local_world_size = 8;
  l.local_rank = 5;
  EXPECT_EQ(device_for_rank("cpu", l, 0), "cpu");
  EXPECT_EQ(device_for_rank("cuda", l, 8), "cuda:5");  // torchrun / srun: every process sees the node's 8 GPUs
  EXPECT_EQ(device_for_rank("cuda", l, 1), "cuda:0");  // --gpus-per-task=1, --gpu-bind, containers: its own GPU
  EXPECT_EQ(device_for_rank("cuda", l, 4), "cuda:1");  // 8 processes on 4 GPUs: two per GPU
  std::string msg = test::error_of<DistError>([&] { device_for_rank("cuda:2", l, 8); });
  EXPECT_NE(msg.find("train.device cuda:2 with 8 processes on this node: all of them would use GPU 2"),
            std::string::npos) << msg;
  msg = test::error_of<DistError>([&] { device_for_rank("cuda", l, 0); });
  EXPECT_NE(msg.find("sees no CUDA device"), std::string::npos) << msg;
  Launch one;  // a single process per node may name its GPU
  EXPECT_EQ(device_for_rank("cuda:3", one, 8), "cuda:3");
  EXPECT_EQ(device_for_rank("cuda", one, 8), "cuda:0");
  EXPECT_THROW(device_for_rank("cuda:8", one, 8), DistError);
}

}  // namespace
}  // namespace nepa::dist
