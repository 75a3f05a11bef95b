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

// Last occurrence of `kNeedle` that ends at or before `end`; npos if none. A backward scan: memrchr skips runs
// without a candidate first byte, and candidates compare inline (a fixed-size memcmp is a word compare), so
// inputs made of near-matches such as 100 MB of "<" cost no call per byte.
template <const std::string_view& kNeedle>
size_t rfind_before(std::string_view hay, size_t end) {
  constexpr size_t kSize = kNeedle.size();
  if (end < kSize) return std::string_view::npos;
  const char* const base = hay.data();
  for (size_t pos = end - kSize + 1; pos-- > 0;) {
    if (base[pos] != kNeedle[0]) {
      const void* hit = memrchr(base, kNeedle[0], pos);
      if (hit == nullptr) break;
      pos = static_cast<size_t>(static_cast<const char*>(hit) - base);
    }
    if (std::memcmp(base + pos, kNeedle.data(), kSize) == 0) return pos;
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
// Trivial (no member initializers) so that the parser's stack of frames costs nothing until used.
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

Verdict add_fractions(Rational a, Rational b, Rational* out) {
  // Knuth 4.5.1: with g = gcd(a.den, b.den) the sum reduces by gcd(t, g) only.
  const int64_t g = static_cast<int64_t>(gcd_u64(a.den, b.den));
  const int64_t ad = a.den / g, bd = b.den / g;
  const __int128 t = static_cast<__int128>(a.num) * bd + static_cast<__int128>(b.num) * ad;
  if (t == 0) return make(0, 1, out);
  const int64_t g2 = static_cast<int64_t>(gcd_u64(static_cast<uint64_t>(abs_u64(t % g)), g));
  return make(t / g2, static_cast<__int128>(ad) * (b.den / g2), out);
}

Verdict multiply_fractions(Rational a, Rational b, Rational* out) {
  if (a.num == 0 || b.num == 0) return make(0, 1, out);
  const int64_t g1 = static_cast<int64_t>(gcd_u64(abs_u64(a.num), b.den));
  const int64_t g2 = static_cast<int64_t>(gcd_u64(abs_u64(b.num), a.den));
  return make(static_cast<__int128>(a.num / g1) * (b.num / g2), static_cast<__int128>(a.den / g2) * (b.den / g1), out);
}

// Stops the integer try of an answer: a division was inexact. Never leaves this file.
constexpr Verdict kInexact = static_cast<Verdict>(255);

// An integer result must stay within the bound: INT64_MIN is outside it.
inline Verdict integer(int64_t value, bool overflowed, int64_t* out) {
  if (overflowed || value == std::numeric_limits<int64_t>::min()) return Verdict::kOverflow;
  *out = value;
  return Verdict::kPass;
}

// Integers, the usual case, evaluated first on their own: no denominators to carry or test. An inexact division
// stops this try (kInexact) and the answer is evaluated again with Fractions. Until then every value is an
// integer, which Fractions computes the same way, with the same range and errors, so a finished integer try has
// the Fractions verdict.
struct Integers {
  using Value = int64_t;
  static Value of(int64_t literal) { return literal; }
  static Value negated(Value v) { return -v; }
  static Verdict add(Value a, Value b, Value* out) {
    int64_t sum;
    const bool overflowed = __builtin_add_overflow(a, b, &sum);
    return integer(sum, overflowed, out);
  }
  static Verdict mul(Value a, Value b, Value* out) {
    int64_t product;
    const bool overflowed = __builtin_mul_overflow(a, b, &product);
    return integer(product, overflowed, out);
  }
  static Verdict divide(Value a, Value b, Value* out) {
    if (b == 0) return Verdict::kDivByZero;
    if (a % b != 0) return kInexact;  // |a| <= INT64_MAX, so a % -1 cannot trap
    *out = a / b;
    return Verdict::kPass;
  }
  static bool equals(Value v, int64_t target) { return v == target; }
};

// Exact rationals: the contract's arithmetic.
struct Fractions {
  using Value = Rational;
  static Value of(int64_t literal) { return Rational{literal, 1}; }
  static Value negated(Value v) { return Rational{-v.num, v.den}; }
  static Verdict add(Value a, Value b, Value* out) { return add_fractions(a, b, out); }
  static Verdict mul(Value a, Value b, Value* out) { return multiply_fractions(a, b, out); }
  static Verdict divide(Value a, Value b, Value* out) {
    if (b.num == 0) return Verdict::kDivByZero;
    const Rational inv = b.num < 0 ? Rational{-b.den, -b.num} : Rational{b.den, b.num};
    return multiply_fractions(a, inv, out);
  }
  static bool equals(Value v, int64_t target) { return v.den == 1 && v.num == target; }
};

// The answer parsed and evaluated in one left-to-right pass, without recursion: an explicit stack holds one
// Frame per open parenthesis. It accepts the grammar of r3fast/verify/reference.py exactly as a recursive
// descent would, evaluates in the same order (each factor joins its term when it ends, each term its expression
// when it ends), and stops at the same token on a grammar error or the depth limit. Arithmetic errors are only
// recorded (the first one in evaluation order wins) because they rank after the literal check. Literals are
// paired with the given numbers as they are read. Values are Arithmetic::Value.
template <class Arithmetic>
class Parser {
  using Value = typename Arithmetic::Value;

 public:
  Parser(const int64_t* numbers, size_t num_numbers) : numbers_(numbers), num_numbers_(num_numbers) {}

  // kPass with the value of [p, end) in *out, or the first grammar/depth error. *end must be a NUL sentinel: scans
  // stop there without bounds checks, and a NUL inside the answer stops them too, which the final position check
  // reports as a parse error. At most kMaxAnswerBytes long, so it holds at most kMaxAnswerBytes / 2 + 1 literals.
  // The scan position is a local, not a member: a char load may alias any member, which would force a store of
  // the position before every byte read. The innermost level lives in locals too (registers); a Frame saves the
  // enclosing one at each '('.
  Verdict parse(const char* p, const char* const end, Value* out) {
    int top = 0;    // open parentheses
    int depth = 0;  // open parentheses plus pending unary signs, as the depth limit counts them
    Value sum = Arithmetic::of(0);      // the ended terms
    Value product = Arithmetic::of(0);  // the current term's ended factors
    Op sum_op = Op::kNone;      // how the current term joins sum (kNone: it is the first term)
    Op product_op = Op::kNone;  // how the next factor joins product (kNone: it is the first factor)
    int unary = 0;              // unary signs preceding the current factor
    bool negate = false;        // an odd number of them are '-'
    Verdict arith = Verdict::kPass;
    for (;;) {
      // An operand: unary signs, then a number or a parenthesis. Numbers, the most common, are tested first.
      p = skip_space(p);
      char c = *p;
      if (!is_digit(c)) {
        if (c != '+' && c != '-' && c != '(') return Verdict::kParseError;
        if (++depth > kMaxExpressionDepth) return Verdict::kTooDeep;
        ++p;
        if (c == '(') {
          frames_[top++] = Frame{sum, product, sum_op, product_op, unary, negate};
          sum_op = Op::kNone;
          product_op = Op::kNone;
          unary = 0;
          negate = false;
        } else {
          ++unary;
          negate ^= c == '-';
        }
        continue;
      }
      Value value;
      p = number(p, &value);
      if (p == nullptr) return Verdict::kParseError;  // a leading zero
      // A factor ended; a closing parenthesis ends the factor that encloses it, and so on outwards.
      for (;;) {
        depth -= unary;
        if (negate) value = Arithmetic::negated(value);
        unary = 0;
        negate = false;
        if (product_op == Op::kNone) {
          product = value;
        } else if (arith == Verdict::kPass) {
          if (product_op == Op::kMul) {
            arith = Arithmetic::mul(product, value, &product);
          } else {
            arith = Arithmetic::divide(product, value, &product);
            if (arith == kInexact) return kInexact;
          }
        }
        p = skip_space(p);
        c = *p;
        if (c == '*' || c == '/') {
          product_op = c == '*' ? Op::kMul : Op::kDiv;
          ++p;
          break;
        }
        // The term ended.
        Value term = sum_op == Op::kSub ? Arithmetic::negated(product) : product;
        if (sum_op == Op::kNone) {
          sum = term;
        } else if (arith == Verdict::kPass) {
          arith = Arithmetic::add(sum, term, &sum);
        }
        if (c == '+' || c == '-') {
          sum_op = c == '+' ? Op::kAdd : Op::kSub;
          product_op = Op::kNone;
          ++p;
          break;
        }
        if (top == 0) {  // the answer ended: only the end of the text may follow
          if (p != end) return Verdict::kParseError;
          arith_ = arith;
          *out = sum;
          return Verdict::kPass;
        }
        if (c != ')') return Verdict::kParseError;
        ++p;
        --depth;
        value = sum;
        const Frame& outer = frames_[--top];
        sum = outer.sum;
        product = outer.product;
        sum_op = outer.sum_op;
        product_op = outer.product_op;
        unary = outer.unary;
        negate = outer.negate;
      }
    }
  }

  Verdict arithmetic_error() const { return arith_; }

  // Whether the literals are the numbers, as multisets.
  bool literals_match() const {
    if (huge_literal_ || num_literals_ != num_numbers_) return false;
    // The usual handful: every literal was paired with an unused equal number as it was read.
    if (num_numbers_ <= kPairedNumbers) return !unpaired_;
    std::vector<int64_t> given(numbers_, numbers_ + num_numbers_);
    std::sort(given.begin(), given.end());
    std::vector<int64_t> literals(literals_.begin(), literals_.begin() + num_literals_);
    std::sort(literals.begin(), literals.end());
    return given == literals;
  }

 private:
  // int-sized, not char: a char store may alias anything and would force reloads.
  enum class Op : int { kNone, kAdd, kSub, kMul, kDiv };

  // The state of a level that a '(' interrupted, as parse() keeps it in locals.
  struct Frame {
    Value sum;
    Value product;
    Op sum_op;
    Op product_op;
    int unary;
    bool negate;
  };  // trivial, like Rational: the stack costs nothing until used

  static const char* skip_space(const char* p) {
    while (is_space(*p)) ++p;
    return p;
  }

  // The end of the NUMBER at p, which starts with a digit, with its value in *out; nullptr for a leading zero.
  const char* number(const char* p, Value* out) {
    const char* const start = p;
    // No test per digit: the value wraps past 19 digits, which the length test below catches.
    uint64_t value = 0;
    for (;; ++p) {
      const unsigned digit = static_cast<unsigned char>(*p) - unsigned{'0'};  // non-digits wrap above 9
      if (digit > 9) break;
      value = value * 10 + digit;
    }
    const auto length = static_cast<size_t>(p - start);  // at least 1: parse() saw a digit
    if (*start == '0' && length > 1) return nullptr;
    // Without leading zeros, 19 digits stay below 2^64 and 20 exceed INT64_MAX. A literal above INT64_MAX can
    // never be one of the numbers; evaluation is then moot.
    if (length > 19 || value > static_cast<uint64_t>(kMax)) {
      huge_literal_ = true;
      value = 0;
    } else {
      add_literal(static_cast<int64_t>(value));
    }
    *out = Arithmetic::of(static_cast<int64_t>(value));
    return p;
  }

  // Pairs the literal with an unused equal number, or keeps it for literals_match beyond kPairedNumbers.
  void add_literal(int64_t literal) {
    if (num_numbers_ > kPairedNumbers) {
      literals_[num_literals_++] = literal;
      return;
    }
    ++num_literals_;
    for (size_t j = 0; j < num_numbers_; ++j) {
      if (numbers_[j] == literal && ((paired_ >> j) & 1) == 0) {
        paired_ |= uint64_t{1} << j;
        return;
      }
    }
    unpaired_ = true;
  }

  static constexpr size_t kPairedNumbers = 64;  // bits in paired_

  const int64_t* const numbers_;
  const size_t num_numbers_;
  Verdict arith_ = Verdict::kPass;
  bool huge_literal_ = false;  // a literal above INT64_MAX, which no number equals
  bool unpaired_ = false;      // a literal found no unused equal number
  uint64_t paired_ = 0;        // bit j: numbers_[j] is paired with a literal
  size_t num_literals_ = 0;
  std::array<Frame, kMaxExpressionDepth> frames_;
  std::array<int64_t, kMaxAnswerBytes / 2 + 1> literals_;  // only beyond kPairedNumbers numbers
};

// The verdict of an answer evaluated with Arithmetic, in the contract's order: grammar and depth, literals,
// arithmetic errors, value. kInexact from Integers when a division leaves the integers.
template <class Arithmetic>
Verdict evaluate(const char* answer, size_t size, const int64_t* numbers, size_t num_numbers, int64_t target) {
  Parser<Arithmetic> parser(numbers, num_numbers);
  typename Arithmetic::Value value;
  const Verdict grammar = parser.parse(answer, answer + size, &value);
  if (grammar != Verdict::kPass) return grammar;
  if (!parser.literals_match()) return Verdict::kWrongNumbers;
  if (parser.arithmetic_error() != Verdict::kPass) return parser.arithmetic_error();
  return Arithmetic::equals(value, target) ? Verdict::kPass : Verdict::kWrongValue;
}

}  // namespace

Verdict find_countdown_answer(std::string_view text, bool known_utf8, std::string_view* answer) {
  if (!known_utf8 && !simdjson::validate_utf8(text.data(), text.size())) return Verdict::kInvalidText;
  const size_t close = rfind_before<kCloseTag>(text, text.size());
  if (close == std::string_view::npos) return Verdict::kNoAnswer;
  const size_t open = rfind_before<kOpenTag>(text, close);
  if (open == std::string_view::npos) return Verdict::kNoAnswer;

  size_t begin = open + kOpenTag.size(), end = close;
  while (begin < end && is_space(text[begin])) ++begin;
  while (end > begin && is_space(text[end - 1])) --end;
  if (begin == end) return Verdict::kNoAnswer;
  if (end - begin > kMaxAnswerBytes) return Verdict::kTooLong;
  *answer = text.substr(begin, end - begin);
  return Verdict::kPass;
}

Verdict check_countdown_answer(const char* answer, size_t size, const int64_t* numbers, size_t num_numbers,
                               int64_t target) {
  if (size > kMaxAnswerBytes) return Verdict::kTooLong;  // the parser's literal storage relies on it
  const Verdict verdict = evaluate<Integers>(answer, size, numbers, num_numbers, target);
  return verdict == kInexact ? evaluate<Fractions>(answer, size, numbers, num_numbers, target) : verdict;
}

Verdict check_countdown(std::string_view text, const int64_t* numbers, size_t num_numbers, int64_t target,
                        bool known_utf8) {
  std::string_view answer;
  const Verdict found = find_countdown_answer(text, known_utf8, &answer);
  if (found != Verdict::kPass) return found;
  char copy[kMaxAnswerBytes + 1];
  std::memcpy(copy, answer.data(), answer.size());
  copy[answer.size()] = '\0';
  return check_countdown_answer(copy, answer.size(), numbers, num_numbers, target);
}

std::vector<Verdict> check_countdown_batch(const CountdownBatch& batch, unsigned num_threads) {
  std::vector<Verdict> verdicts(batch.targets.size());
  parallel_for(verdicts.size(), num_threads, [&](size_t i) {
    const size_t first = i == 0 ? 0 : batch.number_ends[i - 1];
    verdicts[i] = check_countdown(batch.responses.at(i), batch.numbers.data() + first, batch.number_ends[i] - first,
                                  batch.targets[i]);
  });
  return verdicts;
}

}  // namespace r3fast
