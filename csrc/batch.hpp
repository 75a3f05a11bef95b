// A parallel for over a batch of independent checks whose inputs are prepared serially, block by block.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace r3fast {

// Checks items [0, n) with check(i) on `num_threads` threads (0: one per hardware thread) while the calling
// thread is still preparing them: it prepares blocks in order and publish()es each, then finish() has it join
// the checking. Preparing is serial (in the bindings it reads Python objects under the GIL), so overlapping it
// with the checks is what lets extra threads pay off. Threads take blocks of kBlock items in order, a few slow
// (huge) inputs do not stall one thread's share, and a block is checked only once it is published.
// If the preparer throws, the destructor stops the helper threads before the inputs go away.
class PipelinedFor {
 public:
  static constexpr size_t kBlock = 256;

  PipelinedFor(size_t n, unsigned num_threads, std::function<void(size_t)> check)
      : n_(n), threads_(thread_count(n, num_threads)), check_(std::move(check)) {
    helpers_.reserve(threads_ - 1);
    for (unsigned t = 1; t < threads_; ++t) helpers_.emplace_back([this] { work(); });
  }
  ~PipelinedFor() { stop(true); }
  PipelinedFor(const PipelinedFor&) = delete;
  PipelinedFor& operator=(const PipelinedFor&) = delete;

  // Items [0, ready) are prepared and will not change.
  void publish(size_t ready) {
    if (threads_ == 1) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_ = ready;
    }
    ready_changed_.notify_all();
  }

  // Checks the remaining items on the calling thread too; returns once every item is checked.
  void finish() {
    publish(n_);
    work();
    stop(false);
  }

 private:
  void work() {
    for (size_t begin = next_.fetch_add(kBlock); begin < n_; begin = next_.fetch_add(kBlock)) {
      const size_t end = std::min(n_, begin + kBlock);
      if (threads_ > 1 && !wait_until_ready(end)) return;
      for (size_t i = begin; i < end; ++i) check_(i);
    }
  }

  // False if the pipeline was aborted.
  bool wait_until_ready(size_t end) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_changed_.wait(lock, [&] { return ready_ >= end || aborted_; });
    return !aborted_;
  }

  static unsigned thread_count(size_t n, unsigned num_threads) {
    if (num_threads == 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
    const size_t useful = (n + kBlock - 1) / kBlock;
    return static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(num_threads, useful)));
  }

  void stop(bool abort) {
    if (helpers_.empty()) return;
    if (abort) {
      std::lock_guard<std::mutex> lock(mutex_);
      aborted_ = true;
    }
    ready_changed_.notify_all();
    for (auto& t : helpers_) t.join();
    helpers_.clear();
  }

  const size_t n_;
  const unsigned threads_;  // fixed before any helper starts: helpers read it (not helpers_) unsynchronized
  const std::function<void(size_t)> check_;
  std::atomic<size_t> next_{0};
  std::mutex mutex_;
  std::condition_variable ready_changed_;
  size_t ready_ = 0;  // guarded by mutex_
  bool aborted_ = false;
  std::vector<std::thread> helpers_;
};

}  // namespace r3fast
