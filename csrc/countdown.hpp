// Countdown checker: does the last <answer>...</answer> hold an expression that uses each given number
// exactly once and equals the target, in exact rational arithmetic?
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "batch.hpp"
#include "verdict.hpp"

namespace r3fast {

constexpr size_t kMaxAnswerBytes = 1024;  // after stripping whitespace
constexpr int kMaxExpressionDepth = 64;   // parentheses plus unary signs enclosing a factor

// Where the answer is: the bytes between the last </answer> and the closest <answer> before it, stripped of
// ASCII whitespace. kPass with them in *answer, or kNoAnswer, kTooLong or kInvalidText. `text` may be any bytes;
// with `known_utf8` the caller vouches that it is valid UTF-8 (a Python str's UTF-8 form is) and the UTF-8 scan
// is skipped. Work is O(len(text)).
Verdict find_countdown_answer(std::string_view text, bool known_utf8, std::string_view* answer);

// Checks an answer that find_countdown_answer found, in a copy that ends with a NUL: answer[size] == '\0'.
// Work is bounded by kMaxAnswerBytes.
Verdict check_countdown_answer(const char* answer, size_t size, const int64_t* numbers, size_t num_numbers,
                               int64_t target);

// Both steps: the verdict for a whole response.
Verdict check_countdown(std::string_view text, const int64_t* numbers, size_t num_numbers, int64_t target,
                        bool known_utf8 = false);

// The same for a text as the bindings found it: a text with no UTF-8 form is kInvalidText.
inline Verdict check_countdown(TextRef text, const int64_t* numbers, size_t num_numbers, int64_t target) {
  if (text.form == TextForm::kNotText) return Verdict::kInvalidText;
  return check_countdown(text.bytes, numbers, num_numbers, target, text.form == TextForm::kUtf8);
}

// A batch of checks as plain values: the bindings build it while holding the GIL, then check it without.
struct CountdownBatch {
  TextBatch responses;
  std::vector<int64_t> numbers;     // every item's numbers, back to back
  std::vector<size_t> number_ends;  // item i's numbers are numbers[number_ends[i - 1], number_ends[i])
  std::vector<int64_t> targets;
};

// The verdict of every item, checked on up to `num_threads` threads (0: one per hardware thread).
std::vector<Verdict> check_countdown_batch(const CountdownBatch& batch, unsigned num_threads);

}  // namespace r3fast
