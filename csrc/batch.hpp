// What the batch checkers share: a batch's texts as plain bytes, and a loop over its items on several threads.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "pod_buffer.hpp"

namespace r3fast {

// Where a text's bytes came from, which decides what its check must validate.
enum class TextForm : uint8_t {
  kBytes,    // any bytes: the checker validates UTF-8
  kUtf8,     // valid UTF-8 by construction (a Python str's UTF-8 form): the scan is skipped
  kNotText,  // no UTF-8 form at all (a str with lone surrogates): the verdict is kInvalidText
};

// A text of a batch as the bindings found it: bytes borrowed from a Python object, and their form.
struct TextRef {
  std::string_view bytes;
  TextForm form;
};

// The texts of a batch back to back in one buffer, copied once at their total size: one allocation, read in
// order by the checks.
class TextBatch {
 public:
  TextBatch() = default;
  explicit TextBatch(const std::vector<TextRef>& texts) {
    size_t total = 0;
    for (const TextRef& t : texts) total += t.bytes.size();
    char* out = bytes_.extend(total);
    ends_.reserve(texts.size());
    forms_.reserve(texts.size());
    for (const TextRef& t : texts) {
      if (!t.bytes.empty()) std::memcpy(out, t.bytes.data(), t.bytes.size());
      out += t.bytes.size();
      ends_.push_back(static_cast<size_t>(out - bytes_.data()));
      forms_.push_back(t.form);
    }
  }
  size_t size() const { return ends_.size(); }
  std::string_view text(size_t i) const {
    const size_t begin = i == 0 ? 0 : ends_[i - 1];
    return std::string_view(bytes_.data() + begin, ends_[i] - begin);
  }
  TextForm form(size_t i) const { return forms_[i]; }
  TextRef at(size_t i) const { return TextRef{text(i), form(i)}; }

 private:
  PodBuffer<char> bytes_;  // not zero-filled: every byte is copied over
  std::vector<size_t> ends_;
  std::vector<TextForm> forms_;
};

// Runs check(i) for every i in [0, n) on up to `num_threads` threads (0: one per hardware thread), the calling
// thread among them. Starting a thread costs tens of microseconds, about a hundred short checks, so a thread is
// started only for every kItemsPerThread items: a training step's batch of a few dozen runs on the caller alone.
// Threads take blocks of kBlock items as they go, so a few huge inputs do not stall one thread's share.
// check must not throw.
template <class Check>
void parallel_for(size_t n, unsigned num_threads, const Check& check) {
  constexpr size_t kItemsPerThread = 256;
  constexpr size_t kBlock = 64;
  // hardware_concurrency() reads /sys on every call (microseconds): ask once.
  static const unsigned kCores = std::max(1u, std::thread::hardware_concurrency());
  if (num_threads == 0) num_threads = kCores;
  const size_t threads = std::max<size_t>(1, std::min<size_t>(num_threads, n / kItemsPerThread));
  std::atomic<size_t> next{0};
  const auto work = [&] {
    for (size_t begin = next.fetch_add(kBlock); begin < n; begin = next.fetch_add(kBlock)) {
      for (size_t i = begin, end = std::min(n, begin + kBlock); i < end; ++i) check(i);
    }
  };
  std::vector<std::thread> helpers;
  helpers.reserve(threads - 1);
  for (size_t t = 1; t < threads; ++t) helpers.emplace_back(work);
  work();
  for (auto& t : helpers) t.join();
}

}  // namespace r3fast
