"""Shared-prefix forward: the samples of a group share their context, so it is run once, not G times.

A group's sequences are packed into one row, the prefix they share followed by each one's own rest,

    [prefix | suffix_1 | suffix_2 | ... | suffix_G | padding]

with a 4D attention mask in which each suffix sees the prefix and itself (causally), never another
suffix, and position ids that restart after the prefix for each suffix. Every token then sees
exactly the tokens, at exactly the positions, it sees in its own unpacked sequence, so the hidden
states and their gradients are those of the unshared forward, up to rounding (Prefix Grouper,
arXiv 2506.05433). The hidden states are scattered back into the layout of the unshared forward.

The prefix is the longest common prefix of the group's inputs, so completions that begin alike
share their first tokens too. Only a sequence's tokens before its last one are inputs: the last
token is a target and nothing reads the hidden state at it.

Where a model cannot take the mask (flash-attention and other kernels take no custom 4D mask,
sliding windows shorter than a packed row would cut it differently) the caller forwards every
sequence whole, and a warning says so once.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence

import torch
from torch import nn

# attention backends that apply a custom 4D additive mask exactly as given (transformers' eager and SDPA)
MASKED_ATTENTION = ("eager", "sdpa")
_warned: set[str] = set()


def context_groups(contexts: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices of the samples with identical context, one list per context, in order of first appearance."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, context in enumerate(contexts):
        groups.setdefault(tuple(context), []).append(i)
    return list(groups.values())


def unsupported_reason(model: nn.Module) -> str | None:
    """Why `model` cannot run a packed shared-prefix forward, or None when it can."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    backend = getattr(config, "_attn_implementation", None)
    if backend not in MASKED_ATTENTION:
        return f"attention backend {backend!r} takes no custom 4D mask (needs one of {', '.join(MASKED_ATTENTION)})"
    if "position_ids" not in inspect.signature(model.get_decoder().forward).parameters:
        return f"{type(model.get_decoder()).__name__}.forward takes no position_ids"
    return None


def _say_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"shared-prefix training is off: {reason}; each sequence is forwarded whole", stacklevel=3)


def shares_work(model: nn.Module, groups: Sequence[Sequence[int]] | None) -> bool:
    """True when some group has several samples and `model` can run them packed (else a warning, once)."""
    if groups is None or all(len(g) < 2 for g in groups):
        return False
    reason = unsupported_reason(model)
    if reason is not None:
        _say_once(reason)
        return False
    return True


def _common_prefix_length(sequences: Sequence[torch.Tensor]) -> int:
    shortest = min(len(s) for s in sequences)
    first = sequences[0][:shortest]
    length = shortest
    for s in sequences[1:]:
        differs = (s[:shortest] != first).nonzero()
        if len(differs):
            length = min(length, int(differs[0]))
    return length


def _real_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """Each row's unpadded tokens and the column of its first token (left or right padding)."""
    tokens, first_columns = [], []
    for i, (ids, mask) in enumerate(zip(input_ids.cpu(), attention_mask.cpu().bool(), strict=True)):
        columns = mask.nonzero().squeeze(1)
        if len(columns) == 0 or int(columns[-1] - columns[0]) + 1 != len(columns):
            raise ValueError(f"attention_mask row {i} must be one run of ones (left or right padding), "
                             f"got {mask.int().tolist()}")
        tokens.append(ids[columns])
        first_columns.append(int(columns[0]))
    return tokens, first_columns


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int, groups: Sequence[Sequence[int]]):
    """(packed ids [R, Lp], positions [R, Lp], segments [R, Lp], gather index [B, L - 1 - start]).

    Row r packs groups[r]; a segment is 0 for the prefix, j + 1 for the j-th suffix, -1 for padding.
    The gather index points each scored position (column start + t of row b) at its hidden state in
    the packed rows flattened, or at R * Lp (a zero row) where the column holds no input token.
    """
    batch, length = input_ids.shape
    if sorted(i for g in groups for i in g) != list(range(batch)):
        raise ValueError(f"groups must hold each of the {batch} rows exactly once, got {groups}")
    tokens, first_columns = _real_tokens(input_ids, attention_mask)
    inputs = [t[:-1] for t in tokens]  # a sequence's last token is only a target
    rows = []     # (ids, positions, segments) per group
    where = {}    # sample -> (row, prefix length, offset of its suffix in the row)
    for r, group in enumerate(groups):
        prefix = _common_prefix_length([inputs[i] for i in group])
        ids, positions = [inputs[group[0]][:prefix]], [torch.arange(prefix)]
        segments = [torch.zeros(prefix, dtype=torch.long)]
        offset = prefix
        for j, i in enumerate(group):
            suffix = inputs[i][prefix:]
            where[i] = (r, prefix, offset)
            ids.append(suffix)
            positions.append(torch.arange(prefix, prefix + len(suffix)))
            segments.append(torch.full((len(suffix),), j + 1))
            offset += len(suffix)
        rows.append((torch.cat(ids), torch.cat(positions), torch.cat(segments)))
    packed_length = max(max(len(ids) for ids, _, _ in rows), 1)
    packed_ids = torch.zeros((len(rows), packed_length), dtype=torch.long)
    packed_positions = torch.zeros((len(rows), packed_length), dtype=torch.long)
    packed_segments = torch.full((len(rows), packed_length), -1, dtype=torch.long)
    for r, (ids, positions, segments) in enumerate(rows):
        packed_ids[r, : len(ids)] = ids
        packed_positions[r, : len(ids)] = positions
        packed_segments[r, : len(ids)] = segments

    zero_row = len(rows) * packed_length
    index = torch.full((batch, length - 1 - start), zero_row, dtype=torch.long)
    for b in range(batch):
        r, prefix, offset = where[b]
        k = torch.arange(start, length - 1) - first_columns[b]  # token index at each scored column
        real = (k >= 0) & (k < len(inputs[b]))
        flat = torch.where(k < prefix, k, offset + k - prefix) + r * packed_length
        index[b] = torch.where(real, flat, torch.full_like(flat, zero_row))
    return packed_ids, packed_positions, packed_segments, index


def attention_bias(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[R, 1, Lp, Lp] additive mask: 0 where a query may attend a key, the dtype's minimum elsewhere.

    A key is visible when it is not after the query and is in the prefix or in the query's own
    segment. Padding queries see earlier padding and the prefix, never an empty row (that would be NaN).
    """
    order = torch.arange(segments.shape[1], device=segments.device)
    causal = order[None, :, None] >= order[None, None, :]
    query, key = segments[:, :, None], segments[:, None, :]
    visible = causal & ((key == 0) | (key == query))
    bias = torch.zeros(visible.shape, dtype=dtype, device=segments.device)
    return bias.masked_fill_(~visible, torch.finfo(dtype).min)[:, None]


def shared_prefix_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int,
                         groups: Sequence[Sequence[int]]) -> torch.Tensor | None:
    """[B, L - 1 - start, H]: the decoder's output at columns start .. L - 2 of each row, as the
    unshared forward gives it (zeros at columns holding no input token), from one packed forward.
    None when the packed rows would be longer than the model's sliding window (not exact then)."""
    packed_ids, positions, segments, index = pack(input_ids, attention_mask, start, groups)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "sliding_window", None)
    if window is not None and window < packed_ids.shape[1]:
        _say_once(f"a packed row of {packed_ids.shape[1]} tokens is longer than the sliding window ({window})")
        return None
    decoder = model.get_decoder()
    device = input_ids.device
    dtype = model.get_input_embeddings().weight.dtype
    out = decoder(input_ids=packed_ids.to(device), position_ids=positions.to(device),
                  attention_mask=attention_bias(segments.to(device), dtype), use_cache=False)
    hidden = out.last_hidden_state.flatten(0, 1)
    hidden = torch.cat([hidden, hidden.new_zeros(1, hidden.shape[-1])])
    return hidden[index.to(device)]
