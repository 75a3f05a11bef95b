#include "function_calls.hpp"
#include "ascii.hpp"
#include "pod_buffer.hpp"

#include <simdjson.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
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


std::string_view strip(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

using ByteBuffer = PodBuffer<char>;

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

// A JSON value reduced to what equality depends on. Strings and big numbers are canonical bytes in the tree's
// byte buffer (strings unescaped, numbers as exact decimals); containers own a run of items or members.
enum class Kind : uint8_t { kNull, kFalse, kTrue, kSmallNumber, kNumber, kString, kArray, kObject };

struct Node {
  Kind kind;
  // kSmallNumber: the value is begin * 10^size, both read as signed, begin without trailing zeros (or 0, 0).
  uint32_t size;   // bytes of a string or number, elements of an array, members of an object
  uint64_t begin;  // offset in bytes (string, number), items (array) or members (object)
};

// The common case of number() below: at most 18 digits in all, an optional fraction and no exponent (1, -20,
// 0.5, 3.25), written as a kSmallNumber. False (and nothing written) for anything else, which the general path
// then reads or rejects.
[[gnu::always_inline]] inline bool small_number(std::string_view raw, Node* node) {
  const size_t n = raw.size();
  const bool negative = n != 0 && raw[0] == '-';
  size_t i = negative ? 1 : 0;
  const size_t int_begin = i;
  uint64_t v = 0;
  while (i < n && is_digit(raw[i])) v = v * 10 + static_cast<unsigned>(raw[i++] - '0');
  const size_t int_digits = i - int_begin;
  if (int_digits == 0 || (raw[int_begin] == '0' && int_digits > 1)) return false;
  size_t frac_digits = 0;
  if (i < n && raw[i] == '.') {
    const size_t frac_begin = ++i;
    while (i < n && is_digit(raw[i])) v = v * 10 + static_cast<unsigned>(raw[i++] - '0');
    frac_digits = i - frac_begin;
    if (frac_digits == 0) return false;
  }
  // Up to 18 digits v is below 10^18 < 2^63: exact, and it negates exactly. Longer tokens, for which v may have
  // wrapped, go to the general path.
  if (i != n || int_digits + frac_digits > 18) return false;
  int32_t exponent = -static_cast<int32_t>(frac_digits);
  if (v == 0) {
    exponent = 0;
  } else {
    while (v % 10 == 0) {
      v /= 10;
      ++exponent;
    }
  }
  const int64_t significand = negative ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
  *node = Node{Kind::kSmallNumber, static_cast<uint32_t>(exponent), static_cast<uint64_t>(significand)};
  return true;
}

[[gnu::noinline]] bool long_number(std::string_view raw, ByteBuffer* bytes, Node* node);

// Validates a JSON number token and writes its exact decimal value to *node: a kSmallNumber when the value has
// at most 18 significant digits and an exponent within int32 (most numbers), else <sign><digits>e<exponent>
// (digits without leading or trailing zeros) appended to *bytes. Both forms depend on the value alone, so
// equal values give equal nodes.
[[gnu::always_inline]] inline bool number(std::string_view raw, ByteBuffer* bytes, Node* node) {
  while (!raw.empty() && is_space(raw.back())) raw.remove_suffix(1);  // the token carries trailing space
  return small_number(raw, node) || long_number(raw, bytes, node);
}

// number() of a token that small_number() does not take.
bool long_number(std::string_view raw, ByteBuffer* bytes, Node* node) {
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
    *node = Node{Kind::kSmallNumber, 0, 0};
    return true;
  }
  size_t last = total - 1;
  while (digit(last) == '0') --last;
  const int64_t adjust = static_cast<int64_t>(total - 1 - last) - static_cast<int64_t>(frac_digits.size());
  const size_t exp_lead = std::min(exp_digits.find_first_not_of('0'), exp_digits.size());
  exp_digits.remove_prefix(exp_lead);
  // Exponents of more than 17 digits exceed int32 even after the adjustment (|adjust| < 2^32).
  int64_t exponent = 0;
  if (exp_digits.size() <= 17) {
    for (char c : exp_digits) exponent = exponent * 10 + (c - '0');
    exponent = (exp_negative ? -exponent : exponent) + adjust;
    if (last - lead < 18 && exponent >= INT32_MIN && exponent <= INT32_MAX) {
      int64_t significand = 0;
      for (size_t k = lead; k <= last; ++k) significand = significand * 10 + (digit(k) - '0');
      *node = Node{Kind::kSmallNumber, static_cast<uint32_t>(static_cast<int32_t>(exponent)),
                   static_cast<uint64_t>(negative ? -significand : significand)};
      return true;
    }
  }
  ByteBuffer& out = *bytes;
  const uint64_t begin = out.size();
  out += negative ? '-' : '+';
  if (last < int_digits.size()) {
    out.append(int_digits.data() + lead, last + 1 - lead);
  } else {
    if (lead < int_digits.size()) out.append(int_digits.data() + lead, int_digits.size() - lead);
    const size_t frac_from = lead > int_digits.size() ? lead - int_digits.size() : 0;
    out.append(frac_digits.data() + frac_from, last + 1 - int_digits.size() - frac_from);
  }
  out += 'e';
  if (exp_digits.size() <= 17) {
    append_int(&out, exponent);
  } else {
    if (exp_negative) out += '-';
    out += add_small(exp_digits, exp_negative ? -adjust : adjust);
  }
  *node = Node{Kind::kNumber, static_cast<uint32_t>(out.size() - begin), begin};
  return true;
}

// ------------------------------------------------------------------------------------------ canonical calls

// Keys are short: their first 16 bytes are kept in the member and compare as two integers.
struct Member {
  uint64_t head[2];    // the key's first 16 bytes, zero-padded
  uint64_t tail;       // offset in the tree's bytes of the key's bytes past the first 16
  uint32_t key_size;
  uint32_t value;      // node index
};

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "set_key_head masks the key's bytes as little-endian");

// `readable` bytes from p may be read (>= 16 inside a padded document), of which the first n are the key.
void set_key_head(const char* p, size_t n, size_t readable, Member* m) {
  if (readable >= 16) {
    std::memcpy(m->head, p, 16);
  } else {
    m->head[0] = m->head[1] = 0;
    std::memcpy(m->head, p, std::min(n, readable));
  }
  const auto low_bytes = [](size_t k) { return k >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * k)) - 1; };
  m->head[0] &= low_bytes(n);
  m->head[1] &= n <= 8 ? 0 : low_bytes(n - 8);
}

#ifdef __SSE2__  // every x86-64 CPU
// Bit i set iff byte i of w is '"' or '\\'.
inline unsigned quote_or_backslash_bits(__m128i w) {
  return static_cast<unsigned>(_mm_movemask_epi8(
      _mm_or_si128(_mm_cmpeq_epi8(w, _mm_set1_epi8('"')), _mm_cmpeq_epi8(w, _mm_set1_epi8('\\')))));
}
#endif

// Offset of the first '"' or '\\' from p. The document has passed simdjson's stage 1, so a string's closing quote
// exists, and the padding after the document covers the reads past it (16 bytes at a time).
size_t quote_or_backslash(const char* p) {
#ifdef __SSE2__
  for (size_t n = 0;; n += 16) {
    const unsigned hits = quote_or_backslash_bits(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + n)));
    if (hits != 0) return n + static_cast<size_t>(__builtin_ctz(hits));
  }
#else
  constexpr uint64_t kOnes = 0x0101010101010101, kHighs = 0x8080808080808080;
  for (size_t n = 0;; n += 8) {
    uint64_t w;
    std::memcpy(&w, p + n, 8);
    const uint64_t quote = w ^ (kOnes * '"'), backslash = w ^ (kOnes * '\\');
    // Flags zero bytes; the lowest flag is exact (borrows only corrupt the bytes above a zero byte).
    const uint64_t hits = (((quote - kOnes) & ~quote) | ((backslash - kOnes) & ~backslash)) & kHighs;
    if (hits != 0) return n + static_cast<size_t>(__builtin_ctzll(hits)) / 8;
  }
#endif
}

}  // namespace

// Offsets rather than pointers: the vectors grow while a document is read.
struct CallTree {
  PodBuffer<Node> nodes;
  PodBuffer<uint32_t> items;     // array elements; each array's run is contiguous
  PodBuffer<Member> members;     // object members; each object's run is contiguous and sorted by key
  ByteBuffer bytes;
  PodBuffer<uint32_t> calls;     // node index of each call

  void clear() {
    nodes.clear();
    items.clear();
    members.clear();
    bytes.clear();
    calls.clear();
  }
};

namespace {

// Members are kept in this order. Any total order makes equal objects list equal members; ordering by size
// first settles most pairs without reading the bytes, and puts "name" (4 bytes) before "arguments" (9), so
// calls compare by name before their arguments are read.
int compare_keys(const CallTree& a, const Member& x, const CallTree& b, const Member& y) {
  if (x.key_size != y.key_size) return x.key_size < y.key_size ? -1 : 1;
  if (x.head[0] != y.head[0]) return x.head[0] < y.head[0] ? -1 : 1;
  if (x.head[1] != y.head[1]) return x.head[1] < y.head[1] ? -1 : 1;
  return x.key_size <= 16 ? 0 : std::memcmp(a.bytes.data() + x.tail, b.bytes.data() + y.tail, x.key_size - 16);
}

bool key_is(const Member& m, std::string_view key) {
  Member k;
  k.key_size = static_cast<uint32_t>(key.size());
  set_key_head(key.data(), key.size(), key.size(), &k);
  return m.key_size == k.key_size && m.head[0] == k.head[0] && m.head[1] == k.head[1];  // keys of <= 16 bytes
}

int compare_containers(const CallTree& a, const Node& p, const CallTree& b, const Node& q);

// A total order on canonical values (of two trees): 0 iff the values are equal as JSON. Inlined into the
// container loops, like Builder::value: only containers make a call.
[[gnu::always_inline]] inline int compare(const CallTree& a, uint32_t x, const CallTree& b, uint32_t y) {
  const Node& p = a.nodes[x];
  const Node& q = b.nodes[y];
  if (p.kind != q.kind) return p.kind < q.kind ? -1 : 1;
  if (p.size != q.size) return p.size < q.size ? -1 : 1;
  switch (p.kind) {
    case Kind::kSmallNumber:
      return p.begin == q.begin ? 0 : p.begin < q.begin ? -1 : 1;
    case Kind::kNumber:
    case Kind::kString:
      return p.size == 0 ? 0 : std::memcmp(a.bytes.data() + p.begin, b.bytes.data() + q.begin, p.size);
    case Kind::kArray:
    case Kind::kObject:
      return compare_containers(a, p, b, q);
    default:
      return 0;  // null, false, true: the kind is the value
  }
}

// compare() of two arrays or two objects of the same size.
[[gnu::noinline]] int compare_containers(const CallTree& a, const Node& p, const CallTree& b, const Node& q) {
  if (p.kind == Kind::kArray) {
    for (uint32_t i = 0; i < p.size; ++i) {
      if (const int c = compare(a, a.items[p.begin + i], b, b.items[q.begin + i])) return c;
    }
    return 0;
  }
  for (uint32_t i = 0; i < p.size; ++i) {
    const Member& m = a.members[p.begin + i];
    const Member& n = b.members[q.begin + i];
    if (const int c = compare_keys(a, m, b, n)) return c;
    if (const int c = compare(a, m.value, b, n.value)) return c;
  }
  return 0;
}

// Sorted calls make the multiset comparison a pairwise one.
void sort_calls(CallTree* tree) {
  std::sort(tree->calls.begin(), tree->calls.end(),
            [tree](uint32_t x, uint32_t y) { return compare(*tree, x, *tree, y) < 0; });
}

bool same_calls(const CallTree& gold, CallTree* output) {
  if (gold.calls.size() != output->calls.size()) return false;
  sort_calls(output);
  for (size_t i = 0; i < gold.calls.size(); ++i) {
    if (compare(gold, gold.calls[i], *output, output->calls[i]) != 0) return false;
  }
  return true;
}

// Reads JSON documents with simdjson On Demand into a CallTree, rejecting duplicate keys and deep nesting.
class Builder {
 public:
  // Parses `text` as one JSON document and appends its calls to tree->calls. With `one_call` the document must
  // be a single call object; otherwise an array of calls or a single call.
  Verdict add_document(std::string_view text, bool one_call, CallTree* tree) {
    padded_.resize(text.size() + simdjson::SIMDJSON_PADDING);
    std::memcpy(padded_.data(), text.data(), text.size());
    std::memset(padded_.data() + text.size(), 0, simdjson::SIMDJSON_PADDING);  // deterministic reads past the end
    od::document doc;
    if (parser_.iterate(padded_.data(), text.size(), padded_.size()).get(doc)) return Verdict::kInvalidJson;
    tree_ = tree;
    duplicate_ = false;
    bool all_calls = true;
    od::json_type type;
    const bool is_container = !doc.type().get(type) && (type == od::json_type::array || type == od::json_type::object);
    text_size_ = text.size();
    Status st = root(doc, one_call, &all_calls);
    if (st == Status::kOk && is_container && doc.current_location().error() != simdjson::OUT_OF_BOUNDS) {
      st = Status::kInvalid;
    }
    pending_items_.clear();
    pending_members_.clear();
    if (st == Status::kInvalid) return Verdict::kInvalidJson;
    if (st == Status::kTooDeep) return Verdict::kTooDeep;
    if (duplicate_) return Verdict::kDuplicateKey;
    return all_calls ? Verdict::kPass : Verdict::kBadCall;
  }

  void release_if_huge() {
    if (padded_.capacity() > kKeepCapacity) padded_.release();
    if (parser_.capacity() > kKeepCapacity) parser_ = od::parser{};
    if (pending_items_.capacity() > kKeepCapacity / sizeof(uint32_t)) pending_items_.release();
    if (pending_members_.capacity() > kKeepCapacity / sizeof(Member)) pending_members_.release();
  }

 private:
  enum class Status { kOk, kInvalid, kTooDeep };

  Status root(od::document& doc, bool one_call, bool* all_calls) {
    od::json_type type;
    if (doc.type().get(type)) return Status::kInvalid;
    if (type == od::json_type::object) {
      od::object obj;
      if (doc.get_object().get(obj)) return Status::kInvalid;
      uint32_t node;
      const Status st = object(obj, 1, &node);
      if (st == Status::kOk) {
        tree_->calls.push_back(node);
        *all_calls = is_call(node);
      }
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
        uint32_t node;
        const Status st = value(v, 2, &node);
        if (st != Status::kOk) return st;
        *all_calls &= is_call(node);
        tree_->calls.push_back(node);
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
      case od::json_type::number: {
        Node unused;
        return number(raw, &tree_->bytes, &unused) ? Status::kOk : Status::kInvalid;
      }
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

  // {"name": string, "arguments": object} and nothing else; members are in compare_keys order.
  bool is_call(uint32_t node) const {
    const Node& n = tree_->nodes[node];
    if (n.kind != Kind::kObject || n.size != 2) return false;
    const Member& name = tree_->members[n.begin];
    const Member& arguments = tree_->members[n.begin + 1];
    return key_is(arguments, "arguments") && key_is(name, "name") &&
           tree_->nodes[arguments.value].kind == Kind::kObject && tree_->nodes[name.value].kind == Kind::kString;
  }

  // A key without escapes is read in place from the padded document; others are unescaped by simdjson.
  bool read_key(od::field& f, Member* m) {
    const char* const begin = reinterpret_cast<const char*>(f.key().raw());
#ifdef __SSE2__
    // The usual key, shorter than 16 bytes and without escapes, is found, measured and kept from one load.
    const __m128i w = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin));
    if (const unsigned hits = quote_or_backslash_bits(w); hits != 0) {
      const int size = __builtin_ctz(hits);
      if (begin[size] == '"') {
        const __m128i index = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        const __m128i in_key = _mm_cmpgt_epi8(_mm_set1_epi8(static_cast<char>(size)), index);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(m->head), _mm_and_si128(w, in_key));
        m->key_size = static_cast<uint32_t>(size);
        m->tail = 0;
        return true;
      }
    }
#endif
    const char* const p = begin + quote_or_backslash(begin);
    std::string_view key(begin, static_cast<size_t>(p - begin));
    size_t readable = 16;  // the padding after the document covers a 16-byte read from any key in it
    if (*p != '"') {
      if (f.unescaped_key().get(key)) return false;
      readable = key.size();
    }
    m->key_size = static_cast<uint32_t>(key.size());
    set_key_head(key.data(), key.size(), readable, m);
    m->tail = key.size() > 16 ? add_bytes(key.substr(16)) : 0;
    return true;
  }

  uint32_t add_node(Kind kind, uint32_t size = 0, uint64_t begin = 0) {
    tree_->nodes.push_back(Node{kind, size, begin});
    return static_cast<uint32_t>(tree_->nodes.size() - 1);
  }

  uint64_t add_bytes(std::string_view s) {
    const uint64_t at = tree_->bytes.size();
    tree_->bytes.append(s.data(), s.size());
    return at;
  }

  // Inlined into the container loops: only containers make a call, so scalars, most values, cost none.
  [[gnu::always_inline]] Status value(od::value v, int depth, uint32_t* node) {
    od::json_type type;
    if (v.type().get(type)) return Status::kInvalid;
    switch (type) {
      case od::json_type::object: {
        if (depth > kMaxJsonDepth) return Status::kTooDeep;
        od::object obj;
        if (v.get_object().get(obj)) return Status::kInvalid;
        return object(obj, depth, node);
      }
      case od::json_type::array: {
        if (depth > kMaxJsonDepth) return Status::kTooDeep;
        od::array arr;
        if (v.get_array().get(arr)) return Status::kInvalid;
        return array(arr, depth, node);
      }
      case od::json_type::number: {
        Node n;
        if (!number(v.raw_json_token(), &tree_->bytes, &n)) return Status::kInvalid;
        *node = add_node(n.kind, n.size, n.begin);
        return Status::kOk;
      }
      case od::json_type::string: {
        std::string_view s;
        if (v.get_string().get(s)) return Status::kInvalid;
        *node = add_node(Kind::kString, static_cast<uint32_t>(s.size()), add_bytes(s));
        return Status::kOk;
      }
      case od::json_type::boolean: {
        bool b;
        if (v.get_bool().get(b)) return Status::kInvalid;
        *node = add_node(b ? Kind::kTrue : Kind::kFalse);
        return Status::kOk;
      }
      case od::json_type::null: {
        bool is_null = false;
        if (v.is_null().get(is_null) || !is_null) return Status::kInvalid;
        *node = add_node(Kind::kNull);
        return Status::kOk;
      }
    }
    return Status::kInvalid;
  }

  // Elements gather on a stack (nested arrays interleave) and move to the tree as one run when the array ends.
  [[gnu::noinline]] Status array(od::array arr, int depth, uint32_t* node) {
    const size_t base = pending_items_.size();
    for (auto element : arr) {
      od::value child;
      if (element.get(child)) return Status::kInvalid;
      uint32_t child_node;
      const Status st = value(child, depth + 1, &child_node);
      if (st != Status::kOk) return st;
      pending_items_.push_back(child_node);
    }
    const uint64_t begin = tree_->items.size();
    tree_->items.append(pending_items_.data() + base, pending_items_.size() - base);
    *node = add_node(Kind::kArray, static_cast<uint32_t>(pending_items_.size() - base), begin);
    pending_items_.resize(base);
    return Status::kOk;
  }

  [[gnu::noinline]] Status object(od::object obj, int depth, uint32_t* node) {
    const size_t base = pending_members_.size();
    bool sorted = true;
    for (auto field : obj) {
      od::field f;
      if (std::move(field).get(f)) return Status::kInvalid;
      Member m;
      if (!read_key(f, &m)) return Status::kInvalid;
      const Status st = value(f.value(), depth + 1, &m.value);
      if (st != Status::kOk) return st;
      if (pending_members_.size() > base && compare_keys(*tree_, pending_members_.back(), *tree_, m) >= 0) {
        sorted = false;
      }
      pending_members_.push_back(m);
    }
    Member* const first = pending_members_.begin() + base;
    if (!sorted) {
      const auto less = [this](const Member& a, const Member& b) { return compare_keys(*tree_, a, *tree_, b) < 0; };
      std::sort(first, pending_members_.end(), less);
      for (auto it = first; it + 1 < pending_members_.end(); ++it) {
        if (compare_keys(*tree_, *it, *tree_, *(it + 1)) == 0) duplicate_ = true;
      }
    }
    const uint64_t begin = tree_->members.size();
    tree_->members.append(first, pending_members_.size() - base);
    *node = add_node(Kind::kObject, static_cast<uint32_t>(pending_members_.size() - base), begin);
    pending_members_.resize(base);
    return Status::kOk;
  }

  od::parser parser_;
  ByteBuffer padded_;      // the document copied with simdjson's required padding
  size_t text_size_ = 0;   // bytes of the document in padded_
  CallTree* tree_ = nullptr;
  PodBuffer<uint32_t> pending_items_;  // stacks: each open container owns the entries from its base
  PodBuffer<Member> pending_members_;
  bool duplicate_ = false;
};

// Splits the output into JSON documents by its envelope and reads their calls.
Verdict output_calls(Builder& builder, std::string_view text, CallTree* tree) {
  if (text.empty()) return Verdict::kBadFormat;
  if (starts_with(text, kFence)) {
    if (text.size() < 2 * kFence.size() || text.substr(text.size() - kFence.size()) != kFence) {
      return Verdict::kBadFormat;
    }
    std::string_view body = text.substr(kFence.size(), text.size() - 2 * kFence.size());
    if (starts_with(body, kFenceLanguage)) body.remove_prefix(kFenceLanguage.size());
    return builder.add_document(strip(body), false, tree);
  }
  if (starts_with(text, kToolOpen)) {
    size_t pos = 0;
    while (pos < text.size()) {
      if (!starts_with(text.substr(pos), kToolOpen)) return Verdict::kBadFormat;
      const size_t body = pos + kToolOpen.size();
      const size_t close = text.find(kToolClose, body);
      if (close == std::string_view::npos) return Verdict::kBadFormat;
      const Verdict v = builder.add_document(strip(text.substr(body, close - body)), true, tree);
      if (v != Verdict::kPass) return v;
      pos = close + kToolClose.size();
      while (pos < text.size() && is_space(text[pos])) ++pos;
    }
    return Verdict::kPass;
  }
  return builder.add_document(text, false, tree);
}

void release_if_huge(CallTree* tree) {
  if (tree->bytes.capacity() > kKeepCapacity || tree->nodes.capacity() > kKeepCapacity / sizeof(Node) ||
      tree->items.capacity() > kKeepCapacity / sizeof(uint32_t) ||
      tree->members.capacity() > kKeepCapacity / sizeof(Member) ||
      tree->calls.capacity() > kKeepCapacity / sizeof(uint32_t)) {
    *tree = CallTree{};
  }
}

// Per-thread working memory, reused across checks so that a check allocates nothing once warm.
struct Scratch {
  Builder builder;
  CallTree output;
  // The last valid gold given as text, kept with its text: consecutive checks against the same gold (a GRPO
  // group) then read only the output.
  FunctionCallGold gold;
  std::string gold_text;
  bool gold_cached = false;
};

Scratch& thread_scratch() {
  // Held by pointer: with the object itself thread_local, every member access in the inlined builder paid a
  // __tls_get_addr call (a shared library uses the general-dynamic TLS model).
  thread_local std::unique_ptr<Scratch> scratch;
  if (!scratch) scratch = std::make_unique<Scratch>();
  return *scratch;
}

}  // namespace

FunctionCallGold::FunctionCallGold() : tree_(std::make_unique<CallTree>()) {}
FunctionCallGold::~FunctionCallGold() = default;
FunctionCallGold::FunctionCallGold(FunctionCallGold&&) noexcept = default;
FunctionCallGold& FunctionCallGold::operator=(FunctionCallGold&&) noexcept = default;

Verdict FunctionCallGold::parse(std::string_view gold) {
  Builder& builder = thread_scratch().builder;
  if (!tree_) tree_ = std::make_unique<CallTree>();  // moved from
  tree_->clear();
  valid_ = simdjson::validate_utf8(gold.data(), gold.size()) &&
           builder.add_document(strip(gold), false, tree_.get()) == Verdict::kPass;
  builder.release_if_huge();
  if (!valid_) {
    tree_->clear();
    return Verdict::kBadGold;
  }
  sort_calls(tree_.get());
  return Verdict::kPass;
}

Verdict check_function_calls(std::string_view output, const FunctionCallGold& gold, bool known_utf8) {
  if (!gold.valid()) return Verdict::kBadGold;
  if (!known_utf8 && !simdjson::validate_utf8(output.data(), output.size())) return Verdict::kInvalidText;
  Scratch& scratch = thread_scratch();
  CallTree& calls = scratch.output;
  calls.clear();
  Verdict v = output_calls(scratch.builder, strip(output), &calls);
  if (v == Verdict::kPass && !same_calls(*gold.tree_, &calls)) v = Verdict::kWrongCalls;
  scratch.builder.release_if_huge();
  release_if_huge(&calls);
  return v;
}

Verdict check_function_calls(std::string_view output, std::string_view gold, bool known_utf8) {
  Scratch& scratch = thread_scratch();
  if (!scratch.gold_cached || gold != scratch.gold_text) {  // compared by content: exact, whatever the caller
    scratch.gold_cached = false;
    if (scratch.gold.parse(gold) != Verdict::kPass) return Verdict::kBadGold;
    if (gold.size() <= kKeepCapacity) {
      scratch.gold_text.assign(gold);
      scratch.gold_cached = true;
    }
  }
  const Verdict v = check_function_calls(output, scratch.gold, known_utf8);
  if (!scratch.gold_cached) scratch.gold = FunctionCallGold();  // a huge gold is not kept
  return v;
}

Verdict check_function_calls(TextRef output, const FunctionCallGold* gold, std::string_view gold_text) {
  const bool known_utf8 = output.form == TextForm::kUtf8;
  if (gold != nullptr) {
    return output.form == TextForm::kNotText ? Verdict::kInvalidText
                                             : check_function_calls(output.bytes, *gold, known_utf8);
  }
  if (output.form != TextForm::kNotText) return check_function_calls(output.bytes, gold_text, known_utf8);
  return check_function_calls("", gold_text) == Verdict::kBadGold ? Verdict::kBadGold : Verdict::kInvalidText;
}

std::vector<Verdict> check_function_calls_batch(const FunctionCallBatch& batch, unsigned num_threads) {
  std::vector<Verdict> verdicts(batch.golds.size());
  parallel_for(verdicts.size(), num_threads, [&](size_t i) {
    const FunctionCallGold* gold = batch.golds[i];
    verdicts[i] = check_function_calls(batch.outputs.at(i), gold,
                                       gold != nullptr ? std::string_view() : batch.gold_texts.text(batch.gold_text[i]));
  });
  return verdicts;
}

}  // namespace r3fast
