// Function-call checker: do the calls in a model output equal the gold calls as a multiset?
#pragma once
#include <memory>
#include <string_view>
#include <vector>

#include "batch.hpp"
#include "verdict.hpp"

namespace r3fast {

constexpr int kMaxJsonDepth = 128;  // nested arrays/objects; deeper documents are a kTooDeep verdict

struct CallTree;  // canonical calls, defined in function_calls.cpp

// A gold answer parsed once into canonical calls, like a compiled regex: checks against it parse only the output.
// Immutable once parsed, so any number of threads may check against one instance.
class FunctionCallGold {
 public:
  FunctionCallGold();
  ~FunctionCallGold();
  FunctionCallGold(FunctionCallGold&&) noexcept;
  FunctionCallGold& operator=(FunctionCallGold&&) noexcept;

  // `gold` may be any bytes: a JSON list of {"name", "arguments"} calls (or one call). Returns kPass, or kBadGold
  // (and an invalid gold) when it is malformed.
  Verdict parse(std::string_view gold);
  bool valid() const { return valid_; }

 private:
  friend Verdict check_function_calls(std::string_view output, const FunctionCallGold& gold, bool known_utf8);
  std::unique_ptr<CallTree> tree_;
  bool valid_ = false;
};

// `output` may be any bytes; with `known_utf8` the caller vouches that it is valid UTF-8 (a Python str's UTF-8
// form is) and the scan is skipped. An invalid gold is Verdict::kBadGold. Thread-safe: each thread keeps its own
// parser.
Verdict check_function_calls(std::string_view output, const FunctionCallGold& gold, bool known_utf8 = false);

// The same with the gold as JSON text; consecutive checks against equal gold text (a GRPO group) parse it once.
// A malformed gold is Verdict::kBadGold, whatever the output.
Verdict check_function_calls(std::string_view output, std::string_view gold, bool known_utf8 = false);

// One item of a batch: an output as the bindings found it, against a prepared gold or, when `gold` is null,
// against JSON text. A malformed text gold is kBadGold even when the output is not text: it is the caller's error.
Verdict check_function_calls(TextRef output, const FunctionCallGold* gold, std::string_view gold_text);

// A batch of checks as plain values: the bindings build it while holding the GIL, then check it without.
struct FunctionCallBatch {
  TextBatch outputs;
  // Item i's gold, prepared; or null, and its gold is JSON text: gold_texts.text(gold_text[i]). Owned by the
  // caller, which keeps them alive until the checks return (the bindings: by the references their arguments hold).
  std::vector<const FunctionCallGold*> golds;
  TextBatch gold_texts;  // each JSON text gold once per run of items that share it
  std::vector<size_t> gold_text;
};

// The verdict of every item, checked on up to `num_threads` threads (0: one per hardware thread).
std::vector<Verdict> check_function_calls_batch(const FunctionCallBatch& batch, unsigned num_threads);

}  // namespace r3fast
