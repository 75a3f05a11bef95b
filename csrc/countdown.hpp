// Countdown checker: does the last <answer>...</answer> hold an expression that uses each given number
// exactly once and equals the target, in exact rational arithmetic?
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "verdict.hpp"

namespace r3fast {

constexpr size_t kMaxAnswerBytes = 1024;  // after stripping whitespace
constexpr int kMaxExpressionDepth = 64;   // parentheses plus unary signs enclosing a factor

// `text` may be any bytes; invalid UTF-8 is a kInvalidText verdict. With `known_utf8` the caller vouches that
// it is valid UTF-8 (a Python str's UTF-8 form is) and the scan is skipped. Work is O(len(text)) for the tag
// search and UTF-8 check and bounded by kMaxAnswerBytes for everything else.
Verdict check_countdown(std::string_view text, const int64_t* numbers, size_t num_numbers, int64_t target,
                        bool known_utf8 = false);

}  // namespace r3fast
