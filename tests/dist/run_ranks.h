// Runs a test body as several ranks of one Gloo group inside the test process (one thread each, on loopback):
// the same c10d code paths as separate processes, without process management. The threads share torch's
// global generator, so bodies whose results are compared across ranks must not draw from it.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

#include "nepa/dist/comm.h"
#include "test_util.h"

namespace nepa::dist {

// Runs body(comm) on `world` threads, one rank each (groups formed with `timeout`); rethrows the first failure.
inline void run_ranks(int world, const std::function<void(Comm&)>& body,
                      std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  const int port = test::free_port();
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        Launch l;
        l.rank = r;
        l.world_size = world;
        l.local_rank = r;
        l.local_world_size = world;
        l.master_port = port;
        Comm comm(l, "gloo", timeout);
        body(comm);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace nepa::dist
