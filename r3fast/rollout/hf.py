"""HFEngine: batched sampling with a transformers model, for CPU and for machines without vLLM.

A hand-written decode loop over a KV cache rather than `model.generate`, so the engine knows
exactly which distribution each token was drawn from and returns its log-prob.

Log-probs are those of the distribution the token was sampled from *before* top-p truncation:
log_softmax(logits / temperature), or of the raw logits when greedy (temperature 0). That is
what the GRPO loss recomputes from the policy (logits / temperature), so the importance ratio
of an unchanged policy is exactly 1.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import torch

from r3fast.rollout.base import Completion, GenerationStats, SamplingParams, prompt_lists


def sample_next(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [B], log-probs [B]) for the last-position `logits` [B, V] under `params`."""
    logits = logits.float()
    if params.greedy:
        logprobs = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)
    logprobs = torch.log_softmax(logits / params.temperature, dim=-1)
    probs = logprobs.exp()
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the top token always survives)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    # argmax of p / Exp(1) noise draws from p, and costs far less than torch.multinomial on CPU
    noise = torch.empty_like(probs).exponential_(generator=generator)
    tokens = (probs / noise).argmax(dim=-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def bad_word_sequences(tokenizer, bad_words: Sequence[str]) -> list[list[int]]:
    """Token sequences of `bad_words`, each as written and after a space (how it follows a word),
    as vLLM's bad_words reads them."""
    sequences = []
    for word in bad_words:
        for text in (word, " " + word.lstrip()):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if ids and ids not in sequences:
                sequences.append(ids)
    return sequences


def banned_tokens(generated: Sequence[int], sequences: Sequence[Sequence[int]]) -> set[int]:
    """Tokens that would complete one of `sequences` after `generated`: a sequence's last token is
    banned where the tokens before it end the text so far (a one-token sequence: always)."""
    tail = list(generated)
    return {seq[-1] for seq in sequences
            if len(tail) >= len(seq) - 1 and tail[len(tail) - len(seq) + 1:] == list(seq[:-1])}


def cut_at_stop(text: str, stop: Sequence[str]) -> str | None:
    """`text` up to and including the earliest stop string, or None when none occurs."""
    ends = [text.find(s) + len(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else None


class HFEngine:
    """RolloutEngine over a transformers causal LM (see r3fast.rollout.base.RolloutEngine).

    `batch_size` counts sequences (prompts x samples) decoded together. Prompts are sorted by
    length before batching so a batch carries little padding; results come back in input order.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(model, tokenizer)
        self.stats = GenerationStats()  # accumulated over every generate() call

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- RolloutEngine --------------------------------------------------------------------

    def generate(
        self, prompt_token_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        prompts = prompt_lists(prompt_token_ids)
        generator = None
        if not params.greedy:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.seed if params.seed is not None else torch.seed())
        # Greedy samples are identical, so each prompt is decoded once. Sampled ones share their
        # prompt's prefill: the prompt goes through the model once and its KV cache is repeated
        # for the n rows (a group of G reflections costs one prefill, not G).
        copies = 1 if params.greedy else params.n
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_batch = max(1, self.batch_size // copies)
        results: dict[tuple[int, int], Completion] = {}
        start = time.perf_counter()
        for b in range(0, len(order), per_batch):
            chunk = order[b : b + per_batch]
            decoded = self._decode([prompts[i] for i in chunk], params, generator, copies)
            for k, completion in enumerate(decoded):
                i, s = chunk[k // copies], k % copies
                completion.prompt_index = i
                results[(i, s)] = completion
        self.stats.seconds += time.perf_counter() - start
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        out = []
        for i in range(len(prompts)):
            samples = [results[(i, s if not params.greedy else 0)] for s in range(params.n)]
            if params.greedy and params.n > 1:  # independent copies, so callers may mutate them
                samples = [samples[0]] + [_copy(samples[0]) for _ in range(params.n - 1)]
            out.append(samples)
        self.stats.generated_tokens += sum(len(c.token_ids) for cs in out for c in cs)
        return out

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy new weights into the model in place (tied weights may appear under either name)."""
        state = self.model.state_dict()  # tensors share storage with the parameters
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in state:
                    raise ValueError(f"update_weights: the model has no tensor named {name!r}")
                if state[name].shape != tensor.shape:
                    raise ValueError(
                        f"update_weights: {name!r} has shape {tuple(state[name].shape)}, got {tuple(tensor.shape)}"
                    )
                if state[name].data_ptr() != tensor.data_ptr():  # the policy's own tensor: already current
                    state[name].copy_(tensor)

    def sleep(self, level: int = 1) -> None:
        """Nothing to release: the engine shares the trainer's model."""

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Nothing to restore (see sleep)."""

    # -- decoding -------------------------------------------------------------------------

    @torch.no_grad()
    def _decode(
        self, prompts: list[list[int]], params: SamplingParams, generator: torch.Generator | None, copies: int = 1
    ) -> list[Completion]:
        """`copies` completions of each prompt, prompt-major: rows [k * copies, (k + 1) * copies) are prompt k's."""
        from transformers import DynamicCache

        device = self.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long, device=device)
        attention = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
        for r, p in enumerate(prompts):  # left padding: every row's next token lands in the last column
            input_ids[r, width - len(p) :] = torch.tensor(p, device=device)
            attention[r, width - len(p) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)

        cache = DynamicCache(config=self.model.config)
        rows = len(prompts) * copies
        tokens: list[list[int]] = [[] for _ in range(rows)]
        logprobs: list[list[float]] = [[] for _ in range(rows)]
        finish = ["length"] * rows
        live = list(range(rows))  # rows still decoding, in cache order
        eos = torch.tensor(sorted(self.eos_ids), device=device)
        stop_window = max((len(s) for s in params.stop), default=0) + 8  # tokens, >= chars of any stop string
        bad_sequences = bad_word_sequences(self.tokenizer, params.bad_words)

        step_ids = input_ids
        for _ in range(params.max_new_tokens):
            out = self.model(
                input_ids=step_ids,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache, logits = out.past_key_values, out.logits[:, -1, :]
            if copies > 1 and step_ids is input_ids:  # after the shared prefill: one row per sample
                cache.batch_repeat_interleave(copies)
                logits = logits.repeat_interleave(copies, dim=0)
                attention = attention.repeat_interleave(copies, dim=0)
                positions = positions.repeat_interleave(copies, dim=0)
            if bad_sequences:  # the log-probs are then those of the distribution with the bans
                logits = logits.clone()
                for k, r in enumerate(live):
                    banned = banned_tokens(tokens[r], bad_sequences)
                    if banned:
                        logits[k, sorted(banned)] = float("-inf")
            next_ids, next_lp = sample_next(logits, params, generator)
            is_eos = torch.isin(next_ids, eos).tolist()
            next_list, lp_list = next_ids.tolist(), next_lp.tolist()
            keep = []
            for k, r in enumerate(live):
                tokens[r].append(next_list[k])
                logprobs[r].append(lp_list[k])
                if is_eos[k]:
                    finish[r] = "stop"
                elif params.stop and self._hits_stop(tokens[r][-stop_window:], params.stop):
                    finish[r] = "stop"
                else:
                    keep.append(k)
            if not keep:
                break
            if len(keep) < len(live):  # drop finished rows from the batch and the cache
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                next_ids, attention, positions = next_ids[index], attention[index], positions[index]
                live = [live[k] for k in keep]
            step_ids = next_ids[:, None]
            attention = torch.cat([attention, attention.new_ones((len(live), 1))], dim=-1)
            positions = positions[:, -1:] + 1

        completions = []
        for r in range(rows):
            text = self.tokenizer.decode(tokens[r], skip_special_tokens=True)
            if params.stop and finish[r] == "stop":
                text = cut_at_stop(text, params.stop) or text
            completions.append(Completion(tokens[r], logprobs[r], text, finish[r]))
        return completions

    def _hits_stop(self, tail: list[int], stop: Sequence[str]) -> bool:
        return cut_at_stop(self.tokenizer.decode(tail, skip_special_tokens=True), stop) is not None


def _eos_ids(model, tokenizer) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.update(value if isinstance(value, (list, tuple)) else [value])
    if not ids:
        raise ValueError("the model and tokenizer define no eos_token_id: generation could never stop early")
    return ids


def _copy(c: Completion) -> Completion:
    return Completion(list(c.token_ids), list(c.logprobs), c.text, c.finish_reason, c.prompt_index)
