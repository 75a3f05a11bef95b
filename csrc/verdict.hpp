// Verdict codes shared by the Countdown and function-call checkers.
#pragma once
#include <cstdint>

namespace r3fast {

// Order is part of the Python contract only through verdict_name(); codes are never persisted as numbers.
enum class Verdict : uint8_t {
  kPass,
  kInvalidText,   // input is not valid UTF-8 text
  // Countdown
  kNoAnswer,      // no <answer>...</answer> pair, or an empty answer
  kTooLong,       // answer longer than kMaxAnswerBytes
  kParseError,    // answer is not an expression of the grammar
  kTooDeep,       // nesting deeper than the limit (Countdown parens/unary, JSON containers)
  kWrongNumbers,  // literals are not the given numbers, each used once
  kDivByZero,
  kOverflow,      // an intermediate value left the exact range
  kWrongValue,
  // Function calls
  kBadFormat,     // output is not a bare JSON value, one fenced block, or <tool_call> blocks
  kInvalidJson,
  kDuplicateKey,
  kBadCall,       // not a call object {"name": string, "arguments": object} (or a list of them)
  kWrongCalls,    // calls differ from the gold calls
  kBadGold,       // the reference answer itself is malformed: a caller error, never a model verdict
};

inline const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::kPass: return "PASS";
    case Verdict::kInvalidText: return "INVALID_TEXT";
    case Verdict::kNoAnswer: return "NO_ANSWER";
    case Verdict::kTooLong: return "TOO_LONG";
    case Verdict::kParseError: return "PARSE_ERROR";
    case Verdict::kTooDeep: return "TOO_DEEP";
    case Verdict::kWrongNumbers: return "WRONG_NUMBERS";
    case Verdict::kDivByZero: return "DIV_BY_ZERO";
    case Verdict::kOverflow: return "OVERFLOW";
    case Verdict::kWrongValue: return "WRONG_VALUE";
    case Verdict::kBadFormat: return "BAD_FORMAT";
    case Verdict::kInvalidJson: return "INVALID_JSON";
    case Verdict::kDuplicateKey: return "DUPLICATE_KEY";
    case Verdict::kBadCall: return "BAD_CALL";
    case Verdict::kWrongCalls: return "WRONG_CALLS";
    case Verdict::kBadGold: return "BAD_GOLD";
  }
  return "UNKNOWN";
}

inline const char* verdict_reason(Verdict v) {
  switch (v) {
    case Verdict::kPass: return "the attempt is correct";
    case Verdict::kInvalidText: return "the input is not valid UTF-8 text";
    case Verdict::kNoAnswer: return "no non-empty <answer>...</answer> pair";
    case Verdict::kTooLong: return "the answer is longer than 1024 bytes";
    case Verdict::kParseError: return "the answer is not an arithmetic expression of integers, + - * / and parentheses";
    case Verdict::kTooDeep: return "nesting is deeper than the limit";
    case Verdict::kWrongNumbers: return "the literals are not the given numbers, each used exactly once";
    case Verdict::kDivByZero: return "division by zero";
    case Verdict::kOverflow: return "an intermediate value does not fit in 64-bit numerator and denominator";
    case Verdict::kWrongValue: return "the expression does not equal the target";
    case Verdict::kBadFormat: return "the output is not a JSON value, one ```json block, or <tool_call> blocks";
    case Verdict::kInvalidJson: return "the JSON does not parse (strict JSON: no NaN, trailing commas or comments)";
    case Verdict::kDuplicateKey: return "a JSON object has a duplicate key";
    case Verdict::kBadCall: return "not a call object {\"name\": string, \"arguments\": object} or a list of them";
    case Verdict::kWrongCalls: return "the calls differ from the gold calls";
    case Verdict::kBadGold: return "the gold answer is not a JSON list of {\"name\", \"arguments\"} calls";
  }
  return "unknown verdict";
}

}  // namespace r3fast
