// ASCII character classes shared by the Countdown and function-call checkers.
#pragma once
#include <cstdint>

namespace r3fast {

// ASCII whitespace as a bit set: most characters are rejected by the first comparison.
inline constexpr uint64_t kSpaceBits = (uint64_t{1} << ' ') | (uint64_t{1} << '\t') | (uint64_t{1} << '\n') |
                                       (uint64_t{1} << '\v') | (uint64_t{1} << '\f') | (uint64_t{1} << '\r');
inline bool is_space(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u <= ' ' && ((kSpaceBits >> u) & 1) != 0;
}
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace r3fast
