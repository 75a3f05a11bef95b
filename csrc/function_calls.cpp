#include "function_calls.hpp"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace r3fast {
namespace {

namespace od = simdjson::ondemand;

constexpr std::string_view kFence = "```";
constexpr std::string_view kFenceLanguage = "json";
constexpr std::string_view kToolOpen = "<tool_call>";
constexpr std::string_view kToolClose = "</tool_call>";
// Buffers grown past this by one huge input are freed afterwards so a thread does not keep them.
constexpr size_t kKeepCapacity = size_t{1} << 22;

// ASCII whitespace as a bit set: most characters are rejected by the first comparison.
constexpr uint64_t kSpaceBits = (uint64_t{1} << ' ') | (uint64_t{1} << '\t') | (uint64_t{1} << '\n') |
                                (uint64_t{1} << '\v') | (uint64_t{1} << '\f') | (uint64_t{1} << '\r');
bool is_space(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u <= ' ' && ((kSpaceBits >> u) & 1) != 0;
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// A growable byte buffer that never zero-fills: std::string's resize/append paths cost more than the copying.
class ByteBuffer {
 public:
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  char* data() { return data_.get(); }
  const char* data() const { return data_.get(); }
  char operator[](size_t i) const { return data_[i]; }
  std::string_view view() const { return std::string_view(data_.get(), size_); }
  void clear() { size_ = 0; }
  void release() { *this = ByteBuffer(); }

  // Makes room for n more bytes and returns where they start; the caller fills them.
  char* extend(size_t n) {
    if (cap_ - size_ < n) grow(size_ + n);
    char* p = data_.get() + size_;
    size_ += n;
    return p;
  }
  void resize(size_t n) {
    if (n > cap_) grow(n);
    size_ = n;
  }
  void append(const char* p, size_t n) {
    if (n != 0) std::memcpy(extend(n), p, n);
  }
  ByteBuffer& operator+=(std::string_view s) {
    append(s.data(), s.size());
    return *this;
  }
  ByteBuffer& operator+=(char c) {
    *extend(1) = c;
    return *this;
  }

 private:
  void grow(size_t need) {
    const size_t cap = std::max(need, std::max<size_t>(2 * cap_, 256));
    std::unique_ptr<char[]> bigger(new char[cap]);
    if (size_ != 0) std::memcpy(bigger.get(), data_.get(), size_);
    data_ = std::move(bigger);
    cap_ = cap;
  }

  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
  size_t cap_ = 0;
};

void append_int(ByteBuffer* out, int64_t v) {
  char buf[24];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, static_cast<size_t>(res.ptr - buf));
}

// |big| + delta for a decimal digit string big >= 10^17 and |delta| < 2^62: exponents too long for int64.
std::string add_small(std::string_view big, int64_t delta) {
  std::string r(big);
  const bool up = delta >= 0;
  uint64_t carry = up ? static_cast<uint64_t>(delta) : static_cast<uint64_t>(-(delta + 1)) + 1;
  for (size_t i = r.size(); i-- > 0 && carry != 0;) {
    const uint64_t d = static_cast<uint64_t>(r[i] - '0');
    const uint64_t c = carry % 10;
    carry /= 10;
    if (up) {
      const uint64_t s = d + c;
      r[i] = static_cast<char>('0' + s % 10);
      carry += s / 10;
    } else if (d >= c) {
      r[i] = static_cast<char>('0' + d - c);
    } else {
      r[i] = static_cast<char>('0' + d + 10 - c);
      carry += 1;
    }
  }
  if (carry != 0) r.insert(0, std::to_string(carry));  // only when adding
  const size_t nz = r.find_first_not_of('0');
  return r.substr(nz);
}

struct Span {
  size_t begin, size;
};

struct Member {
  size_t begin;      // start of the encoded key
  size_t key_begin;  // unescaped key bytes
  size_t key_size;
  size_t end;        // end of the encoded value
  uint64_t key_prefix;  // the key's first 8 bytes big-endian, zero-padded: orders most keys without memcmp
};

uint64_t key_prefix(std::string_view key) {
  uint64_t p = 0;
  const size_t n = std::min<size_t>(key.size(), 8);
  for (size_t i = 0; i < n; ++i) p |= static_cast<uint64_t>(static_cast<unsigned char>(key[i])) << (56 - 8 * i);
  return p;
}

// Writes each JSON value in a canonical byte form so that two values are equal as JSON (objects unordered,
// numbers by exact decimal value, strings unescaped) iff their encodings are equal bytes:
//   null n | true t | false f | number d<sign><digits>e<exponent>; or d0; | string s<len as 8 bytes><bytes>
//   array [<values>] | object {<key string><value>...} with members sorted by key bytes.
class Canonicalizer {
 public:
  void clear() { truncate(0); }
  // Drops the canonical bytes written after the first `size` (those of a gold kept for the next check).
  void truncate(size_t size) {
    out_.resize(size);
    members_.clear();
  }
  size_t size() const { return out_.size(); }

  std::string_view bytes(Span s) const { return out_.view().substr(s.begin, s.size); }

  // Parses `text` as one JSON document and appends its calls to `calls`. With `one_call` the document must be
  // a single call object; otherwise an array of calls or a single call.
  Verdict add_document(std::string_view text, bool one_call, std::vector<Span>* calls) {
    padded_.resize(text.size() + simdjson::SIMDJSON_PADDING);
    std::memcpy(padded_.data(), text.data(), text.size());
    std::memset(padded_.data() + text.size(), 0, simdjson::SIMDJSON_PADDING);  // deterministic reads past the end
    od::document doc;
    if (parser_.iterate(padded_.data(), text.size(), padded_.size()).get(doc)) return Verdict::kInvalidJson;
    duplicate_ = false;
    bool all_calls = true;
    od::json_type type;
    const bool is_container = !doc.type().get(type) && (type == od::json_type::array || type == od::json_type::object);
    text_size_ = text.size();
    Status st = root(doc, one_call, calls, &all_calls);
    if (st == Status::kOk && is_container && doc.current_location().error() != simdjson::OUT_OF_BOUNDS) {
      st = Status::kInvalid;
    }
    if (st == Status::kInvalid) return Verdict::kInvalidJson;
    if (st == Status::kTooDeep) return Verdict::kTooDeep;
    if (duplicate_) return Verdict::kDuplicateKey;
    return all_calls ? Verdict::kPass : Verdict::kBadCall;
  }

  // Returns whether the canonical bytes were dropped.
  bool release_if_huge() {
    if (padded_.capacity() > kKeepCapacity) padded_.release();
    if (tmp_.capacity() > kKeepCapacity) tmp_.release();
    if (parser_.capacity() > kKeepCapacity) parser_ = od::parser{};
    if (out_.capacity() <= kKeepCapacity) return false;
    out_.release();
    return true;
  }

 private:
  enum class Status { kOk, kInvalid, kTooDeep };

  Status root(od::document& doc, bool one_call, std::vector<Span>* calls, bool* all_calls) {
    od::json_type type;
    if (doc.type().get(type)) return Status::kInvalid;
    if (type == od::json_type::object) {
      od::object obj;
      if (doc.get_object().get(obj)) return Status::kInvalid;
      const size_t begin = out_.size();
      const Status st = object(obj, 1, all_calls);
      calls->push_back({begin, out_.size() - begin});
      return st;
    }
    *all_calls = false;
    if (type == od::json_type::array) {
      od::array arr;
      if (doc.get_array().get(arr)) return Status::kInvalid;
      *all_calls = !one_call;
      for (auto element : arr) {
        od::value v;
        if (element.get(v)) return Status::kInvalid;
        const size_t begin = out_.size();
        bool is_call = false;
        const Status st = value(v, 2, &is_call);
        if (st != Status::kOk) return st;
        *all_calls &= is_call;
        calls->push_back({begin, out_.size() - begin});
      }
      return Status::kOk;
    }
    // A scalar document is never a call, but it must still be valid JSON to say so. Its raw token runs to the
    // next token, so it reaches the end of the text iff nothing follows.
    std::string_view raw;
    if (doc.raw_json_token().get(raw) || raw.data() + raw.size() != padded_.data() + text_size_) {
      return Status::kInvalid;
    }
    switch (type) {
      case od::json_type::number:
        return number(raw) ? Status::kOk : Status::kInvalid;
      case od::json_type::string: {
        std::string_view s;
        return doc.get_string().get(s) ? Status::kInvalid : Status::kOk;
      }
      case od::json_type::boolean: {
        bool b;
        return doc.get_bool().get(b) ? Status::kInvalid : Status::kOk;
      }
      case od::json_type::null: {
        bool is_null = false;
        return !doc.is_null().get(is_null) && is_null ? Status::kOk : Status::kInvalid;
      }
      default:
        return Status::kInvalid;
    }
  }

  Status value(od::value v, int depth, bool* is_call) {
    od::json_type type;
    if (v.type().get(type)) return Status::kInvalid;
    switch (type) {
      case od::json_type::object: {
        if (depth > kMaxJsonDepth) return Status::kTooDeep;
        od::object obj;
        if (v.get_object().get(obj)) return Status::kInvalid;
        return object(obj, depth, is_call);
      }
      case od::json_type::array: {
        if (depth > kMaxJsonDepth) return Status::kTooDeep;
        od::array arr;
        if (v.get_array().get(arr)) return Status::kInvalid;
        out_ += '[';
        for (auto element : arr) {
          od::value child;
          if (element.get(child)) return Status::kInvalid;
          bool unused;
          const Status st = value(child, depth + 1, &unused);
          if (st != Status::kOk) return st;
        }
        out_ += ']';
        return Status::kOk;
      }
      case od::json_type::number:
        return number(v.raw_json_token()) ? Status::kOk : Status::kInvalid;
      case od::json_type::string: {
        std::string_view s;
        if (v.get_string().get(s)) return Status::kInvalid;
        string(s);
        return Status::kOk;
      }
      case od::json_type::boolean: {
        bool b;
        if (v.get_bool().get(b)) return Status::kInvalid;
        out_ += b ? 't' : 'f';
        return Status::kOk;
      }
      case od::json_type::null: {
        bool is_null = false;
        if (v.is_null().get(is_null) || !is_null) return Status::kInvalid;
        out_ += 'n';
        return Status::kOk;
      }
    }
    return Status::kInvalid;
  }

  Status object(od::object obj, int depth, bool* is_call) {
    const size_t begin = out_.size();
    const size_t base = members_.size();
    out_ += '{';
    bool sorted = true;
    for (auto field : obj) {
      od::field f;
      std::string_view key;
      if (std::move(field).get(f) || f.unescaped_key().get(key)) return Status::kInvalid;
      Member m;
      m.begin = out_.size();
      m.key_begin = string(key);
      m.key_size = key.size();
      bool unused;
      const Status st = value(f.value(), depth + 1, &unused);
      if (st != Status::kOk) return st;
      m.end = out_.size();
      m.key_prefix = key_prefix(key);
      if (members_.size() > base && !key_less(members_.back(), m)) sorted = false;
      members_.push_back(m);
    }
    if (!sorted) sort_members(begin, base);
    out_ += '}';
    const size_t n = members_.size() - base;
    *is_call = n == 2 && key_of(members_[base]) == "arguments" && key_of(members_[base + 1]) == "name" &&
               out_[value_begin(members_[base])] == '{' && out_[value_begin(members_[base + 1])] == 's';
    members_.resize(base);
    return Status::kOk;
  }

  // Members arrived out of key order (or repeated): sort them and rewrite the object's bytes in that order.
  void sort_members(size_t begin, size_t base) {
    const auto first = members_.begin() + static_cast<std::ptrdiff_t>(base);
    std::sort(first, members_.end(), [&](const Member& a, const Member& b) { return key_less(a, b); });
    for (auto it = first; it + 1 < members_.end(); ++it) {
      if (it->key_prefix == (it + 1)->key_prefix && key_of(*it) == key_of(*(it + 1))) duplicate_ = true;
    }
    const size_t body = begin + 1;
    tmp_.clear();
    tmp_.append(out_.data() + body, out_.size() - body);
    out_.resize(body);
    for (auto it = first; it != members_.end(); ++it) {
      const size_t new_begin = out_.size();
      out_.append(tmp_.data() + (it->begin - body), it->end - it->begin);
      it->key_begin = new_begin + (it->key_begin - it->begin);
      it->end = new_begin + (it->end - it->begin);
      it->begin = new_begin;
    }
  }

  std::string_view key_of(const Member& m) const { return out_.view().substr(m.key_begin, m.key_size); }
  // Byte-wise key order (as std::string_view compares), decided by the prefixes when they differ.
  bool key_less(const Member& a, const Member& b) const {
    if (a.key_prefix != b.key_prefix) return a.key_prefix < b.key_prefix;
    return key_of(a) < key_of(b);
  }
  static size_t value_begin(const Member& m) { return m.key_begin + m.key_size; }

  // Returns where the string's bytes start in out_.
  // The length is 8 raw bytes, not decimal text: fixed width keeps the encoding unambiguous and costs a copy.
  size_t string(std::string_view s) {
    const uint64_t size = s.size();
    char* p = out_.extend(1 + sizeof size + s.size());
    const size_t at = out_.size() - s.size();
    *p = 's';
    std::memcpy(p + 1, &size, sizeof size);
    std::memcpy(p + 1 + sizeof size, s.data(), s.size());
    return at;
  }

  // Validates a JSON number token and writes its exact decimal value as (sign, digits, exponent).
  bool number(std::string_view raw) {
    while (!raw.empty() && is_space(raw.back())) raw.remove_suffix(1);  // the token carries trailing space
    size_t i = 0;
    const size_t n = raw.size();
    const bool negative = i < n && raw[i] == '-';
    if (negative) ++i;
    const size_t int_begin = i;
    if (i < n && raw[i] == '0') {
      ++i;
    } else {
      while (i < n && is_digit(raw[i])) ++i;
    }
    if (i == int_begin) return false;
    const std::string_view int_digits = raw.substr(int_begin, i - int_begin);
    std::string_view frac_digits;
    if (i < n && raw[i] == '.') {
      const size_t b = ++i;
      while (i < n && is_digit(raw[i])) ++i;
      if (i == b) return false;
      frac_digits = raw.substr(b, i - b);
    }
    bool exp_negative = false;
    std::string_view exp_digits;
    if (i < n && (raw[i] == 'e' || raw[i] == 'E')) {
      ++i;
      if (i < n && (raw[i] == '+' || raw[i] == '-')) exp_negative = raw[i++] == '-';
      const size_t b = i;
      while (i < n && is_digit(raw[i])) ++i;
      if (i == b) return false;
      exp_digits = raw.substr(b, i - b);
    }
    if (i != n) return false;

    // value = digits(int ++ frac) * 10^(exp - len(frac)); drop leading zeros, move trailing zeros to exp.
    // The digit string is int ++ frac, addressed as one run without copying it.
    const size_t total = int_digits.size() + frac_digits.size();
    const auto digit = [&](size_t k) { return k < int_digits.size() ? int_digits[k] : frac_digits[k - int_digits.size()]; };
    size_t lead = 0;
    while (lead < total && digit(lead) == '0') ++lead;
    if (lead == total) {
      out_ += "d0;";
      return true;
    }
    size_t last = total - 1;
    while (digit(last) == '0') --last;
    const int64_t adjust = static_cast<int64_t>(total - 1 - last) - static_cast<int64_t>(frac_digits.size());
    out_ += 'd';
    out_ += negative ? '-' : '+';
    if (last < int_digits.size()) {
      out_.append(int_digits.data() + lead, last + 1 - lead);
    } else {
      if (lead < int_digits.size()) out_.append(int_digits.data() + lead, int_digits.size() - lead);
      const size_t frac_from = lead > int_digits.size() ? lead - int_digits.size() : 0;
      out_.append(frac_digits.data() + frac_from, last + 1 - int_digits.size() - frac_from);
    }
    out_ += 'e';
    const size_t exp_lead = std::min(exp_digits.find_first_not_of('0'), exp_digits.size());
    exp_digits.remove_prefix(exp_lead);
    if (exp_digits.size() <= 17) {
      int64_t e = 0;
      for (char c : exp_digits) e = e * 10 + (c - '0');
      append_int(&out_, (exp_negative ? -e : e) + adjust);
    } else {
      if (exp_negative) out_ += '-';
      const std::string exponent = add_small(exp_digits, exp_negative ? -adjust : adjust);
      out_ += exponent;
    }
    out_ += ';';
    return true;
  }

  od::parser parser_;
  ByteBuffer padded_;  // the document copied with simdjson's required padding
  size_t text_size_ = 0;  // bytes of the document in padded_
  ByteBuffer out_;     // canonical bytes of every value of the current check
  ByteBuffer tmp_;
  std::vector<Member> members_;  // a stack: each open object owns the members from its base
  bool duplicate_ = false;
};

// Splits the output into JSON documents by its envelope and canonicalizes their calls.
Verdict output_calls(Canonicalizer& canon, std::string_view text, std::vector<Span>* calls) {
  if (text.empty()) return Verdict::kBadFormat;
  if (starts_with(text, kFence)) {
    if (text.size() < 2 * kFence.size() || text.substr(text.size() - kFence.size()) != kFence) {
      return Verdict::kBadFormat;
    }
    std::string_view body = text.substr(kFence.size(), text.size() - 2 * kFence.size());
    if (starts_with(body, kFenceLanguage)) body.remove_prefix(kFenceLanguage.size());
    return canon.add_document(strip(body), false, calls);
  }
  if (starts_with(text, kToolOpen)) {
    size_t pos = 0;
    while (pos < text.size()) {
      if (!starts_with(text.substr(pos), kToolOpen)) return Verdict::kBadFormat;
      const size_t body = pos + kToolOpen.size();
      const size_t close = text.find(kToolClose, body);
      if (close == std::string_view::npos) return Verdict::kBadFormat;
      const Verdict v = canon.add_document(strip(text.substr(body, close - body)), true, calls);
      if (v != Verdict::kPass) return v;
      pos = close + kToolClose.size();
      while (pos < text.size() && is_space(text[pos])) ++pos;
    }
    return Verdict::kPass;
  }
  return canon.add_document(text, false, calls);
}

bool same_multiset(const Canonicalizer& canon, std::vector<Span>& a, std::vector<Span>& b) {
  if (a.size() != b.size()) return false;
  const auto less = [&](Span x, Span y) { return canon.bytes(x) < canon.bytes(y); };
  std::sort(a.begin(), a.end(), less);
  std::sort(b.begin(), b.end(), less);
  for (size_t i = 0; i < a.size(); ++i) {
    if (canon.bytes(a[i]) != canon.bytes(b[i])) return false;
  }
  return true;
}

struct Scratch {
  Canonicalizer canon;
  std::vector<Span> gold_calls, output_calls;
  // The last valid gold: its text, and its canonical calls kept at the start of the canonicalizer's bytes.
  // Consecutive checks against the same gold (a GRPO group) then canonicalize only the output.
  std::string gold_text;
  size_t gold_end = 0;
  bool gold_cached = false;
};

}  // namespace

Verdict check_function_calls(std::string_view output, std::string_view gold) {
  // Held by pointer: with the object itself thread_local, every member access in the inlined canonicalizer
  // paid a __tls_get_addr call (a shared library uses the general-dynamic TLS model).
  thread_local std::unique_ptr<Scratch> scratch_holder;
  if (!scratch_holder) scratch_holder = std::make_unique<Scratch>();
  Scratch& scratch = *scratch_holder;
  Canonicalizer& canon = scratch.canon;
  scratch.output_calls.clear();

  bool gold_ok = true;
  if (scratch.gold_cached && gold == scratch.gold_text) {  // compared by content: exact, whatever the caller
    canon.truncate(scratch.gold_end);
  } else {
    canon.clear();
    scratch.gold_calls.clear();
    scratch.gold_cached = false;
    gold_ok = simdjson::validate_utf8(gold.data(), gold.size()) &&
              canon.add_document(strip(gold), false, &scratch.gold_calls) == Verdict::kPass;
    if (gold_ok && gold.size() <= kKeepCapacity) {
      scratch.gold_text.assign(gold);
      scratch.gold_end = canon.size();
      scratch.gold_cached = true;
    }
  }

  Verdict v;
  if (!gold_ok) {
    v = Verdict::kBadGold;
  } else if (!simdjson::validate_utf8(output.data(), output.size())) {
    v = Verdict::kInvalidText;
  } else {
    v = output_calls(canon, strip(output), &scratch.output_calls);
    if (v == Verdict::kPass && !same_multiset(canon, scratch.gold_calls, scratch.output_calls)) {
      v = Verdict::kWrongCalls;
    }
  }
  if (canon.release_if_huge()) scratch.gold_cached = false;
  return v;
}

}  // namespace r3fast
