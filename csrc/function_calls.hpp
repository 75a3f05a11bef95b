// Function-call checker: do the calls in a model output equal the gold calls as a multiset?
#pragma once
#include <string_view>

#include "verdict.hpp"

namespace r3fast {

constexpr int kMaxJsonDepth = 128;  // nested arrays/objects; deeper documents are a kTooDeep verdict

// `output` and `gold` may be any bytes. `gold` is a JSON list of {"name", "arguments"} calls (or one call);
// a malformed gold is Verdict::kBadGold. Thread-safe: each thread keeps its own parser.
Verdict check_function_calls(std::string_view output, std::string_view gold);

}  // namespace r3fast
