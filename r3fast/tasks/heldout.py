"""Keeping training data apart from a held-out evaluation: by function name and by query.

A model that trained on a held-out tool, or on a held-out request, would be measured on what it
memorised. `check_disjoint` raises when a training instance offers a tool whose name the held-out
set uses, or asks a request the held-out set asks (compared casefolded, whitespace collapsed).

    >>> held_out = held_out_from(load_instances("bfcl"))      # or r3fast.tasks.bfcl.bfcl_held_out()
    >>> check_disjoint(generate_function_calling(1000), held_out)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from r3fast.tasks.base import Instance

MAX_NAMED = 10  # overlapping names/queries quoted in the error; the counts cover all of them


@dataclass(frozen=True)
class HeldOut:
    function_names: frozenset[str]     # every tool a held-out instance offers, called or not
    queries: frozenset[str]            # every held-out request, as normalise_query writes it


def normalise_query(query: str) -> str:
    return " ".join(query.casefold().split())


def held_out_from(instances: Iterable[Instance]) -> HeldOut:
    instances = list(instances)
    return HeldOut(
        function_names=frozenset(t["name"] for i in instances for t in i.data["tools"]),
        queries=frozenset(normalise_query(i.data["query"]) for i in instances),
    )


def _quoted(items: set[str]) -> str:
    shown = sorted(items)[:MAX_NAMED]
    more = f" and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return ", ".join(repr(s) for s in shown) + more


def check_disjoint(training: Iterable[Instance], held_out: HeldOut, what: str = "the training data") -> None:
    """ValueError naming the function names and queries `training` shares with `held_out`."""
    seen = held_out_from(training)
    names = set(seen.function_names & held_out.function_names)
    queries = set(seen.queries & held_out.queries)
    if names or queries:
        parts = []
        if names:
            parts.append(f"{len(names)} function name(s): {_quoted(names)}")
        if queries:
            parts.append(f"{len(queries)} query(ies): {_quoted(queries)}")
        raise ValueError(f"{what} overlaps the held-out evaluation in " + "; and ".join(parts))
