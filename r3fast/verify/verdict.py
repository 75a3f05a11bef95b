"""The result of one check, for logs and debugging."""

from __future__ import annotations

from dataclasses import dataclass

# Every code a check can return; both contracts share PASS, INVALID_TEXT and TOO_DEEP.
COUNTDOWN_CODES = (
    "PASS",
    "INVALID_TEXT",
    "NO_ANSWER",
    "TOO_LONG",
    "PARSE_ERROR",
    "TOO_DEEP",
    "WRONG_NUMBERS",
    "DIV_BY_ZERO",
    "OVERFLOW",
    "WRONG_VALUE",
)
FUNCTION_CALL_CODES = (
    "PASS",
    "INVALID_TEXT",
    "BAD_FORMAT",
    "INVALID_JSON",
    "TOO_DEEP",
    "DUPLICATE_KEY",
    "BAD_CALL",
    "WRONG_CALLS",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    code: str  # machine-readable: one of COUNTDOWN_CODES or FUNCTION_CALL_CODES
    reason: str  # one human-readable sentence saying why

    @property
    def passed(self) -> bool:
        return self.code == "PASS"
