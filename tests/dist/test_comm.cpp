// Process groups and gradient averaging with two ranks in one test process (one thread each, Gloo on
// loopback): the same c10d code paths as separate processes, without process management. The models here have
// no randomness in their forward (the ranks' threads would share torch's global generator).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <map>
#include <thread>

#include "nepa/dist/comm.h"
#include "nepa/dist/grad_sync.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/nepa_loss.h"
#include "dist/run_ranks.h"
#include "test_util.h"
#include "nepa/train/optim.h"
#include "test_util.h"

namespace nepa::dist {
namespace {

TEST(Comm, AWorldOfOneDoesNothing) {
  Comm c;
  EXPECT_EQ(c.world_size(), 1);
  EXPECT_TRUE(c.is_main());
  torch::Tensor t = torch::ones({3});
  c.all_reduce(t);
  EXPECT_TRUE(torch::equal(t, torch::ones({3})));
  EXPECT_EQ(c.all_reduce(std::vector<double>{1.5, 2}), (std::vector<double>{1.5, 2}));
  EXPECT_TRUE(torch::equal(c.all_gather_rows(t), t));
  c.barrier();
}

TEST(Comm, TheHotPathRefusesTensorsOffTheGroupsDeviceAndSmallFiguresAreStaged) {
  run_ranks(2, [](Comm& c) {
    EXPECT_EQ(c.device(), torch::Device(torch::kCPU));
    // A tensor on another device than the group's: what ProcessGroupNCCL would get from CPU-side evaluation
    // code. The check is the same for every backend, so it is testable here with the meta device.
    const torch::Tensor elsewhere = torch::zeros({4}, torch::TensorOptions().device(torch::kMeta));
    std::string msg = test::error_of<DistError>([&] { c.all_reduce_async(elsewhere); });
    EXPECT_NE(msg.find("all_reduce was handed a tensor on meta, but this gloo group works on contiguous tensors "
                       "on cpu"), std::string::npos) << msg;
    msg = test::error_of<DistError>([&] { c.broadcast({elsewhere}); });
    EXPECT_NE(msg.find("broadcast was handed a tensor on meta"), std::string::npos) << msg;
    // all_reduce of a tensor stages it through the group's device and writes the sum back in place: here a
    // non-contiguous view (the staging path), which the hot path would refuse.
    torch::Tensor base = torch::arange(8, torch::kInt64).view({2, 4}) * (c.rank() + 1);
    torch::Tensor view = base.t();  // non-contiguous
    EXPECT_THROW(c.all_reduce_async(view), DistError);
    c.all_reduce(view);
    EXPECT_TRUE(torch::equal(base, torch::arange(8, torch::kInt64).view({2, 4}) * 3));
    c.barrier();
  });
}

TEST(Comm, CollectivesOnTwoRanks) {
  run_ranks(2, [](Comm& c) {
    EXPECT_EQ(c.world_size(), 2);
    EXPECT_EQ(c.backend(), "gloo");
    torch::Tensor t = torch::full({4}, static_cast<float>(c.rank() + 1));
    c.all_reduce(t);
    EXPECT_TRUE(torch::equal(t, torch::full({4}, 3.0f)));
    auto sums = c.all_reduce(std::vector<double>{0.25 * c.rank(), 1.0});
    EXPECT_EQ(sums, (std::vector<double>{0.25, 2.0}));
    // Uneven shares: rank 0 holds 3 rows, rank 1 one; everyone gets all four in rank order.
    torch::Tensor rows = c.rank() == 0 ? torch::arange(6, torch::kInt64).view({3, 2}) : torch::full({1, 2}, 9, torch::kInt64);
    torch::Tensor all = c.all_gather_rows(rows);
    EXPECT_TRUE(torch::equal(all, torch::tensor({0, 1, 2, 3, 4, 5, 9, 9}, torch::kInt64).view({4, 2})));
    torch::Tensor empty = c.rank() == 0 ? torch::empty({0, 3}) : torch::ones({2, 3});
    EXPECT_TRUE(torch::equal(c.all_gather_rows(empty), torch::ones({2, 3})));
    torch::Tensor a = torch::full({2}, static_cast<float>(c.rank())), b = torch::full({1}, 7.0 + c.rank(), torch::kFloat64);
    c.broadcast({a, b}, /*root=*/1);
    EXPECT_TRUE(torch::equal(a, torch::ones({2})));
    EXPECT_EQ(b.item<double>(), 8.0);
    c.barrier();
  });
}

ModelConfig deterministic_model() {
  ModelConfig m = test::tiny_model_config();
  m.pos_embed_rescale = std::nullopt;  // no random draw in the forward
  m.drop_path_prob = 0;
  return m;
}

// `steps` AdamW steps on `pixels` cut into `micro` micro-batches per step (loss / micro each), with gradients
// averaged by `sync` when given. Returns the named parameters after the last step.
std::map<std::string, torch::Tensor> train_steps(ViTNepaModel& model, const torch::Tensor& pixels, int micro,
                                                 int steps, GradSync* sync) {
  OptimConfig oc;
  oc.betas = {0.9, 0.95};
  auto groups = decay_groups(*model, 0.05);
  auto opt = make_adamw(groups, oc);
  for (size_t g = 0; g < opt->num_groups(); ++g) opt->set_lr(g, 1e-3);
  ObjectiveConfig obj;
  const int64_t b = pixels.size(0) / micro;
  for (int s = 0; s < steps; ++s) {
    for (int k = 0; k < micro; ++k) {
      NepaLoss l = nepa_forward_loss(model, pixels.narrow(0, k * b, b), obj);
      if (sync) sync->begin(k == micro - 1);
      (l.loss / static_cast<double>(micro)).backward();
    }
    if (sync) sync->finish();
    opt->step();
    opt->zero_grad();
  }
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : model->named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

TEST(GradSync, TwoRanksEqualOneProcessWithTheWholeBatch) {
  torch::set_num_threads(1);
  torch::manual_seed(0);
  const torch::Tensor pixels = torch::rand({8, 3, 16, 16}) * 2 - 1;
  torch::manual_seed(1);
  ViTNepaModel ref(deterministic_model());
  const auto init = ref->named_parameters();
  std::vector<torch::Tensor> init_copy;
  for (const auto& p : init) init_copy.push_back(p.value().detach().clone());
  for (int accum : {1, 2}) {
    SCOPED_TRACE("accumulation " + std::to_string(accum));
    ViTNepaModel single(deterministic_model());
    {
      torch::NoGradGuard g;
      auto ps = single->parameters();
      for (size_t i = 0; i < ps.size(); ++i) ps[i].copy_(init_copy[i]);
    }
    // One process, 8 images per step in `accum` micro-batches.
    const auto expected = train_steps(single, pixels, accum, 3, nullptr);
    std::vector<std::map<std::string, torch::Tensor>> got(2);
    std::vector<int64_t> buckets(2);
    run_ranks(2, [&](Comm& c) {
      // Each rank starts from its own random init: the broadcast must make them rank 0's.
      ViTNepaModel m(deterministic_model());
      if (c.rank() == 0) {
        torch::NoGradGuard g;
        auto ps = m->parameters();
        for (size_t i = 0; i < ps.size(); ++i) ps[i].copy_(init_copy[i]);
      } else {
        torch::NoGradGuard g;
        for (auto& p : m->parameters()) p.add_(1.0);
      }
      broadcast_module_state(c, m->parameters());
      GradSync sync(c, m->parameters(), /*bucket_mb=*/0.01);  // ~10 KB: several buckets
      buckets[c.rank()] = sync.num_buckets();
      got[c.rank()] = train_steps(m, pixels.narrow(0, 4 * c.rank(), 4), accum, 3, &sync);
    });
    EXPECT_GT(buckets[0], 3);
    for (const auto& [name, value] : expected) {
      EXPECT_TRUE(torch::equal(got[0].at(name), got[1].at(name))) << name;  // replicas stay bit-identical
      EXPECT_LE(test::max_abs_diff(got[0].at(name), value), 1e-6) << name;
    }
  }
}

TEST(GradSync, AccumulationMicroStepsStayLocalAndUnusedParametersAreHandled) {
  run_ranks(2, [](Comm& c) {
    const double r = c.rank();
    torch::Tensor used = torch::zeros({3}, torch::requires_grad());
    torch::Tensor sometimes = torch::zeros({2}, torch::requires_grad());  // used on rank 0 only
    torch::Tensor never = torch::zeros({2}, torch::requires_grad());
    GradSync sync(c, {used, sometimes, never}, /*bucket_mb=*/1e-6);  // one parameter per bucket
    EXPECT_EQ(sync.num_buckets(), 3);
    // A micro-step without sync: the gradient is this rank's own.
    sync.begin(false);
    (used * (r + 1)).sum().backward();
    sync.finish();
    EXPECT_TRUE(torch::equal(used.grad(), torch::full({3}, r + 1).to(torch::kFloat32)));
    // The last micro-step: accumulated gradients (r + 1) + (r + 1) averaged over ranks = (2 + 4) / 2.
    sync.begin(true);
    torch::Tensor loss = (used * (r + 1)).sum();
    if (c.rank() == 0) loss = loss + (sometimes * 4).sum();
    loss.backward();
    sync.finish();
    EXPECT_TRUE(torch::equal(used.grad(), torch::full({3}, 3.0f)));
    ASSERT_TRUE(sometimes.grad().defined());  // rank 1 contributes zeros: (4 + 0) / 2
    EXPECT_TRUE(torch::equal(sometimes.grad(), torch::full({2}, 2.0f)));
    EXPECT_FALSE(never.grad().defined());  // nobody produced one: the optimizer will skip it
  });
}

// The gradients are the buckets (no copy in, none out): two parameters of one bucket share its storage; and the
// set of trained parameters, learned at the first synchronised step, may not change: a gradient outside it is
// an error at finish(), and a parameter of it that no rank trains shows in the summed step_usage().
TEST(GradSync, GradientsAreBucketViewsAndTheTrainedSetMayNotChange) {
  run_ranks(2, [](Comm& c) {
    torch::Tensor a = torch::zeros({3}, torch::requires_grad());
    torch::Tensor b = torch::zeros({2}, torch::requires_grad());
    torch::Tensor late = torch::zeros({2}, torch::requires_grad());  // untrained at step 1, trained at step 2
    GradSync sync(c, {a, b, late}, /*bucket_mb=*/1.0);             // one bucket
    EXPECT_EQ(sync.num_buckets(), 1);
    sync.begin(true);
    (a * 2 + 0).sum().add((b * 3).sum()).backward();
    sync.finish();
    EXPECT_EQ(a.grad().storage().data_ptr().get(), b.grad().storage().data_ptr().get());
    EXPECT_TRUE(torch::equal(a.grad(), torch::full({3}, 2.0f)));
    EXPECT_FALSE(late.grad().defined());
    // Both ranks trained a and b; the sum over ranks of the step's usage says so, and nothing is missing.
    torch::Tensor usage = sync.step_usage().clone();
    c.all_reduce(usage);
    std::vector<double> summed(usage.data_ptr<double>(), usage.data_ptr<double>() + usage.numel());
    EXPECT_EQ(summed, (std::vector<double>{2, 2, 0}));
    EXPECT_FALSE(sync.first_untrained(summed).has_value());

    // Step 2: b is trained by no rank (found from the summed usage), a gradient comes to `late` (an error).
    a.mutable_grad().reset();
    b.mutable_grad().reset();
    sync.begin(true);
    EXPECT_TRUE(a.grad().defined() && b.grad().defined()) << "the views are attached at the step's first begin()";
    (a * 1).sum().backward();
    sync.finish();
    usage = sync.step_usage().clone();
    c.all_reduce(usage);
    summed.assign(usage.data_ptr<double>(), usage.data_ptr<double>() + usage.numel());
    ASSERT_TRUE(sync.first_untrained(summed).has_value());
    EXPECT_EQ(*sync.first_untrained(summed), 1u);
    sync.begin(true);
    (a * 1).sum().add((late * 1).sum()).backward();
    const std::string msg = test::error_of<DistError>([&] { sync.finish(); });
    EXPECT_NE(msg.find("parameter 2 (of the trained parameters, in registration order) got a gradient, but no rank "
                       "trained it at the run's first step"), std::string::npos) << msg;
  });
}

TEST(Comm, ARankThatFailsIsNamedByTheOthers) {
  std::string message;
  run_ranks(2, [&](Comm& c) {
    if (c.rank() == 1) {
      c.report_failure("data: /data/x.jpg unreadable");
      return;  // leaves without the all-reduce: its Comm closes
    }
    try {
      c.all_reduce(torch::ones({1}));
    } catch (const DistError& e) {
      message = e.what();
    }
  });
  EXPECT_EQ(message.rfind("rank 0 of 2 (", 0), 0u) << message;
  EXPECT_NE(message.find("): all_reduce failed: rank 1 ("), std::string::npos) << message;
  EXPECT_NE(message.find(") reported: data: /data/x.jpg unreadable"), std::string::npos) << message;
}

// The failure path NCCL depends on (a dead NCCL peer never closes anything the others would notice): rank 1
// reports an error and then stays in the group without joining the collective, so no connection closes, and
// rank 0 must learn of it from the store within about a second, not when rank 1's group goes away (6 s).
TEST(Comm, AReportedFailureEndsAPeersWaitWithinSeconds) {
  std::string message;
  double waited = 0;
  run_ranks(2, [&](Comm& c) {
    if (c.rank() == 1) {
      c.report_failure("checkpoint: disk full");
      std::this_thread::sleep_for(std::chrono::seconds(6));
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    message = test::error_of<DistError>([&] { c.all_reduce(torch::ones({1})); });
    waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  });
  EXPECT_LT(waited, 4.0) << message;
  EXPECT_NE(message.find("all_reduce failed: rank 1 ("), std::string::npos) << message;
  EXPECT_NE(message.find(") reported: checkpoint: disk full"), std::string::npos) << message;
}

// A silent peer (alive, no report, never joining): the wait ends after dist.timeout_s with one line naming it, in
// every collective (barrier and broadcast wait the same way). The backend's own timeout is later (a backstop).
TEST(Comm, ASilentPeerEndsTheWaitAfterTheTimeoutAndIsNamed) {
  for (const std::string op : {"all_reduce", "barrier", "broadcast"}) {
    SCOPED_TRACE(op);
    std::string message;
    double waited = 0;
    run_ranks(
        2,
        [&](Comm& c) {
          if (c.rank() == 1) {
            std::this_thread::sleep_for(std::chrono::milliseconds(7500));
            return;
          }
          const auto t0 = std::chrono::steady_clock::now();
          message = test::error_of<PeerFailure>([&] {
            if (op == "all_reduce") c.all_reduce(torch::ones({1}));
            else if (op == "barrier") c.barrier();
            else c.broadcast({torch::ones({1})});
          });
          waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        },
        std::chrono::milliseconds(1500));
    // 1.5 s of timeout, then 3 s for live ranks to check in (rank 1 never does); rank 1 leaves only at 7.5 s.
    EXPECT_GE(waited, 1.4) << message;
    EXPECT_LT(waited, 7.0) << message;
    EXPECT_NE(message.find(op + " failed: no answer from rank(s) 1 ("), std::string::npos) << message;
    EXPECT_NE(message.find(") within dist.timeout_s = 1.5 s"), std::string::npos) << message;
  }
}

// A rank that leaves without a word (killed: its connections close, nothing is reported): once the ranks that
// are alive have checked in through the store, the one that did not is named, by every survivor.
TEST(Comm, ARankThatVanishesIsNamedByEverySurvivor) {
  std::vector<std::string> messages(2);
  run_ranks(
      3,
      [&](Comm& c) {
        if (c.rank() == 2) return;  // its group closes with it
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        messages[c.rank()] = test::error_of<PeerFailure>([&] { c.all_reduce(torch::ones({1})); });
      },
      std::chrono::seconds(20));
  for (const auto& m : messages) {
    EXPECT_NE(m.find("all_reduce failed: rank(s) 2 ("), std::string::npos) << m;
    EXPECT_NE(m.find(") stopped answering (killed, crashed or hung)"), std::string::npos) << m;
  }
}

TEST(Comm, NcclErrorHandlingAbortsTheCommunicatorUnlessTheUserChose) {
  std::map<std::string, std::string> env;
  auto get = [&](const char* n) -> const char* {
    auto it = env.find(n);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(nccl_env_defaults(get), (Env{{"TORCH_NCCL_ASYNC_ERROR_HANDLING", "2"}}));
  env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "";  // set but empty: as unset
  EXPECT_EQ(nccl_env_defaults(get), (Env{{"TORCH_NCCL_ASYNC_ERROR_HANDLING", "2"}}));
  env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "3";
  EXPECT_TRUE(nccl_env_defaults(get).empty());
  env.clear();
  env["NCCL_ASYNC_ERROR_HANDLING"] = "1";  // the deprecated name ProcessGroupNCCL still reads
  EXPECT_TRUE(nccl_env_defaults(get).empty());
}

TEST(Comm, BackendChoice) {
  EXPECT_EQ(resolve_backend("auto", torch::kCPU), "gloo");
  EXPECT_EQ(resolve_backend("gloo", torch::kCPU), "gloo");
  EXPECT_THROW(resolve_backend("nccl", torch::kCPU), DistError);
  EXPECT_THROW(resolve_backend("mpi", torch::kCPU), DistError);
  if (nccl_available()) {
    EXPECT_EQ(resolve_backend("auto", torch::Device("cuda:0")), "nccl");
  }
}

}  // namespace
}  // namespace nepa::dist
