// A parallel for over a batch of independent checks.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace r3fast {

// Calls fn(i) for every i in [0, n) on `num_threads` threads (0: one per hardware thread). Threads take
// blocks of indices from a shared counter so a few slow (huge) inputs do not stall one thread's share.
template <class Fn>
void parallel_for(size_t n, unsigned num_threads, Fn&& fn) {
  constexpr size_t kBlock = 256;
  if (num_threads == 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  const size_t useful = (n + kBlock - 1) / kBlock;
  const unsigned threads = static_cast<unsigned>(std::min<size_t>(num_threads, useful));
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t begin = next.fetch_add(kBlock); begin < n; begin = next.fetch_add(kBlock)) {
      const size_t end = std::min(n, begin + kBlock);
      for (size_t i = begin; i < end; ++i) fn(i);
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
}

}  // namespace r3fast
