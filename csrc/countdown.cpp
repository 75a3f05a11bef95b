#include "countdown.hpp"
#include "ascii.hpp"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace r3fast {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr std::string_view kOpenTag = "<answer>";
constexpr std::string_view kCloseTag = "</answer>";


// Last occurrence of `needle` that ends at or before `end`; npos if none. A backward scan: memrchr skips runs
// without a candidate first byte, and candidates compare inline, so inputs made of near-matches such as
// 100 MB of "<" cost no call per byte.
size_t rfind_before(std::string_view hay, std::string_view needle, size_t end) {
  if (end < needle.size()) return std::string_view::npos;
  const char* const base = hay.data();
  for (size_t pos = end - needle.size() + 1; pos-- > 0;) {
    if (base[pos] != needle[0]) {
      const void* hit = memrchr(base, needle[0], pos);
      if (hit == nullptr) break;
      pos = static_cast<size_t>(static_cast<const char*>(hit) - base);
    }
    size_t k = 1;
    while (k < needle.size() && base[pos + k] == needle[k]) ++k;
    if (k == needle.size()) return pos;
  }
  return std::string_view::npos;
}

uint64_t gcd_u64(uint64_t a, uint64_t b) {
  if (a == 0) return b;
  if (b == 0) return a;
  const int shift = __builtin_ctzll(a | b);
  a >>= __builtin_ctzll(a);
  while (b != 0) {
    b >>= __builtin_ctzll(b);
    if (a > b) std::swap(a, b);
    b -= a;
  }
  return a << shift;
}

uint64_t abs_u64(__int128 x) { return static_cast<uint64_t>(x < 0 ? -x : x); }

// An exact rational in lowest terms with den > 0 and |num|, den <= INT64_MAX. The bound keeps every
// intermediate of +,-,*,/ inside __int128, so overflow is detected exactly instead of wrapping.
// Trivial (no member initializers) so that the parser's stack of levels costs nothing until used.
struct Rational {
  int64_t num;
  int64_t den;
};

bool fits(__int128 x) { return x >= -static_cast<__int128>(kMax) && x <= kMax; }

Verdict make(__int128 num, __int128 den, Rational* out) {
  if (!fits(num) || den > kMax) return Verdict::kOverflow;
  out->num = static_cast<int64_t>(num);
  out->den = static_cast<int64_t>(den);
  return Verdict::kPass;
}

Verdict add(Rational a, Rational b, Rational* out) {
  // Integers, the common case, need no gcd and no 128-bit division.
  if (a.den == 1 && b.den == 1) return make(static_cast<__int128>(a.num) + b.num, 1, out);
  // Knuth 4.5.1: with g = gcd(a.den, b.den) the sum reduces by gcd(t, g) only.
  const int64_t g = static_cast<int64_t>(gcd_u64(a.den, b.den));
  const int64_t ad = a.den / g, bd = b.den / g;
  const __int128 t = static_cast<__int128>(a.num) * bd + static_cast<__int128>(b.num) * ad;
  if (t == 0) return make(0, 1, out);
  const int64_t g2 = static_cast<int64_t>(gcd_u64(static_cast<uint64_t>(abs_u64(t % g)), g));
  return make(t / g2, static_cast<__int128>(ad) * (b.den / g2), out);
}

Verdict mul(Rational a, Rational b, Rational* out) {
  if (a.num == 0 || b.num == 0) return make(0, 1, out);
  if (a.den == 1 && b.den == 1) return make(static_cast<__int128>(a.num) * b.num, 1, out);
  const int64_t g1 = static_cast<int64_t>(gcd_u64(abs_u64(a.num), b.den));
  const int64_t g2 = static_cast<int64_t>(gcd_u64(abs_u64(b.num), a.den));
  return make(static_cast<__int128>(a.num / g1) * (b.num / g2), static_cast<__int128>(a.den / g2) * (b.den / g1), out);
}

Verdict divide(Rational a, Rational b, Rational* out) {
  if (b.num == 0) return Verdict::kDivByZero;
  const Rational inv = b.num < 0 ? Rational{-b.den, -b.num} : Rational{b.den, b.num};
  return mul(a, inv, out);
}

// The answer parsed and evaluated in one left-to-right pass, without recursion: an explicit stack holds one
// Level per open parenthesis. It accepts the grammar of r3fast/verify/reference.py exactly as a recursive
// descent would, evaluates in the same order (each factor joins its term when it ends, each term its expression
// when it ends), and stops at the same token on a grammar error or the depth limit. Arithmetic errors are only
// recorded (the first one in evaluation order wins) because they rank after the literal check.
class Parser {
 public:
  // `s` ends with a NUL sentinel at s[size] (not counted in size): scans stop there without bounds checks, and
  // a NUL inside the answer stops them too, which the final position check reports as a parse error.
  Parser(const char* s, size_t size) : p_(s), end_(s + size) {}

  // kPass with the value in *out, or the first grammar/depth error.
  Verdict parse(Rational* out) {
    int top = 0;    // index of the innermost open level
    int depth = 0;  // open parentheses plus pending unary signs, as the depth limit counts them
    levels_[0] = Level{};
    for (;;) {
      // An operand: unary signs, then a number or a parenthesis.
      char c = peek();
      if (c == '+' || c == '-' || c == '(') {
        if (++depth > kMaxExpressionDepth) return Verdict::kTooDeep;
        ++p_;
        if (c == '(') {
          levels_[++top] = Level{};
        } else {
          ++levels_[top].unary;
          levels_[top].negate ^= c == '-';
        }
        continue;
      }
      Rational value;
      if (!number(&value)) return Verdict::kParseError;
      // A factor ended; a closing parenthesis ends the factor that encloses it, and so on outwards.
      for (;;) {
        Level& level = levels_[top];
        depth -= level.unary;
        if (level.negate) value.num = -value.num;
        level.unary = 0;
        level.negate = false;
        if (level.product_op == 0) {
          level.product = value;
        } else if (arith_ == Verdict::kPass) {
          arith_ = level.product_op == '*' ? mul(level.product, value, &level.product)
                                           : divide(level.product, value, &level.product);
        }
        c = peek();
        if (c == '*' || c == '/') {
          level.product_op = c;
          ++p_;
          break;
        }
        // The term ended.
        Rational term = level.product;
        if (level.sum_op == '-') term.num = -term.num;
        if (level.sum_op == 0) {
          level.sum = term;
        } else if (arith_ == Verdict::kPass) {
          arith_ = add(level.sum, term, &level.sum);
        }
        if (c == '+' || c == '-') {
          level.sum_op = c;
          level.product_op = 0;
          ++p_;
          break;
        }
        if (top == 0) {  // the answer ended: only the end of the text may follow
          if (p_ != end_) return Verdict::kParseError;
          *out = level.sum;
          return Verdict::kPass;
        }
        if (c != ')') return Verdict::kParseError;
        ++p_;
        --depth;
        value = level.sum;
        --top;
      }
    }
  }

  Verdict arithmetic_error() const { return arith_; }
  bool literals_match(const int64_t* numbers, size_t n) {
    if (huge_literal_ || n != num_literals_) return false;
    if (n <= 64) {  // the usual handful: pair each literal with an unused equal number
      uint64_t used = 0;
      for (size_t i = 0; i < n; ++i) {
        size_t j = 0;
        while (j < n && (((used >> j) & 1) != 0 || numbers[j] != literals_[i])) ++j;
        if (j == n) return false;
        used |= uint64_t{1} << j;
      }
      return true;
    }
    // n == num_literals_ <= kMaxAnswerBytes / 2 + 1
    std::vector<int64_t> given(numbers, numbers + n);
    std::sort(given.begin(), given.end());
    std::sort(literals_.begin(), literals_.begin() + n);
    return std::equal(given.begin(), given.end(), literals_.begin());
  }

 private:
  // One open parenthesis (level 0: the whole answer): its expression so far and its current term so far.
  struct Level {
    Rational sum;          // the ended terms
    Rational product;      // the current term's ended factors
    char sum_op;           // how the current term joins sum: 0 (first term), '+' or '-'
    char product_op;       // how the next factor joins product: 0 (first factor), '*' or '/'
    bool negate;           // an odd number of unary '-' precede the current factor
    int unary;             // unary signs preceding the current factor
  };  // trivial, like Rational; Level{} (all zero) opens a level

  char peek() {
    while (is_space(*p_)) ++p_;
    return *p_;
  }

  bool number(Rational* out) {
    const char* const start = p_;
    // Up to 18 digits cannot exceed INT64_MAX: the usual literal takes this loop alone.
    uint64_t value = 0;
    for (; is_digit(*p_) && p_ - start < 18; ++p_) value = value * 10 + static_cast<uint64_t>(*p_ - '0');
    bool huge = false;
    for (; is_digit(*p_); ++p_) {
      const uint64_t d = static_cast<uint64_t>(*p_ - '0');
      if (value > (static_cast<uint64_t>(kMax) - d) / 10) huge = true;
      if (!huge) value = value * 10 + d;
    }
    if (p_ == start || (*start == '0' && p_ - start > 1)) return false;
    // A literal above INT64_MAX can never be one of the numbers; evaluation is then moot.
    huge_literal_ |= huge;
    if (num_literals_ < literals_.size()) literals_[num_literals_] = static_cast<int64_t>(value);
    ++num_literals_;
    *out = Rational{huge ? 0 : static_cast<int64_t>(value), 1};
    return true;
  }

  const char* p_;
  const char* const end_;
  Verdict arith_ = Verdict::kPass;
  bool huge_literal_ = false;
  size_t num_literals_ = 0;
  std::array<Level, kMaxExpressionDepth + 1> levels_;
  std::array<int64_t, kMaxAnswerBytes / 2 + 1> literals_;
};
}  // namespace

Verdict check_countdown(std::string_view text, const int64_t* numbers, size_t num_numbers, int64_t target,
                        bool known_utf8) {
  if (!known_utf8 && !simdjson::validate_utf8(text.data(), text.size())) return Verdict::kInvalidText;
  const size_t close = rfind_before(text, kCloseTag, text.size());
  if (close == std::string_view::npos) return Verdict::kNoAnswer;
  const size_t open = rfind_before(text, kOpenTag, close);
  if (open == std::string_view::npos) return Verdict::kNoAnswer;

  size_t begin = open + kOpenTag.size(), end = close;
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  if (begin == end) return Verdict::kNoAnswer;
  if (end - begin > kMaxAnswerBytes) return Verdict::kTooLong;

  char answer[kMaxAnswerBytes + 1];
  std::memcpy(answer, text.data() + begin, end - begin);
  answer[end - begin] = '\0';
  Parser parser(answer, end - begin);
  Rational value;
  const Verdict grammar = parser.parse(&value);
  if (grammar != Verdict::kPass) return grammar;
  if (!parser.literals_match(numbers, num_numbers)) return Verdict::kWrongNumbers;
  if (parser.arithmetic_error() != Verdict::kPass) return parser.arithmetic_error();
  return value.den == 1 && value.num == target ? Verdict::kPass : Verdict::kWrongValue;
}

}  // namespace r3fast
