"""Pushing a trainer's weights into a running vLLM engine, and reading them back.

The push hands vLLM the trainer's tensors in checkpoint (Hugging Face) names through
vLLM's in-place `reload_weights`, which copies each layer into the engine's existing
storage and re-runs the platform's weight processing (oneDNN repacking on CPU). Nothing
is written to disk and no second copy of the model is built: the iterator yields the
trainer's own tensors, and sharded (FSDP2 DTensor) parameters are gathered one at a time
as vLLM consumes them.

vLLM loads a layer only once all of its checkpoint tensors have arrived (q, k and v make
one fused matrix), and a layer left half-loaded would run on uninitialised memory. So a
push must name every checkpoint tensor; the names and shapes are checked against the
checkpoint the engine started from before the engine is touched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

LM_HEAD = "lm_head.weight"
# Buffers some older checkpoints saved that no engine loads.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def checkpoint_shapes(model_path: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the safetensors checkpoint at `model_path` (headers only)."""
    files = sorted(Path(model_path).glob("*.safetensors"))
    if not files:
        raise ValueError(f"model_path {str(model_path)!r} holds no *.safetensors files; save the model with "
                         "save_pretrained(safe_serialization=True)")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with open(file, "rb") as f:  # a safetensors file starts with an 8-byte header length, then JSON
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        shapes.update({name: tuple(meta["shape"]) for name, meta in header.items() if name != "__metadata__"})
    return shapes


def plan_push(
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    shapes: dict[str, tuple[int, ...]],
    tied: bool,
) -> list[tuple[str, torch.Tensor]]:
    """Check a push against the checkpoint layout and return the (name, tensor) pairs to send.

    The list holds references to the caller's tensors, not copies. With tied embeddings the
    output projection is the embedding matrix: `lm_head.weight` is dropped (vLLM skips it and
    its CPU kernel is refreshed from the embedding after the push).
    """
    pairs: list[tuple[str, torch.Tensor]] = []
    seen: set[str] = set()
    for name, tensor in named_tensors:
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"update_weights expects (name, tensor) pairs, got ({type(name).__name__}, "
                             f"{type(tensor).__name__})")
        if name.endswith(IGNORED_SUFFIXES) or (tied and name == LM_HEAD):
            continue
        if name not in shapes:
            raise ValueError(f"update_weights: the engine's checkpoint has no tensor named {name!r} "
                             f"(expected Hugging Face names such as {next(iter(shapes))!r})")
        if name in seen:
            raise ValueError(f"update_weights: tensor {name!r} given twice")
        if tuple(tensor.shape) != shapes[name]:
            raise ValueError(f"update_weights: {name!r} has shape {tuple(tensor.shape)}, "
                             f"the engine expects {shapes[name]}")
        seen.add(name)
        pairs.append((name, tensor))
    missing = sorted(n for n in shapes if n not in seen and not n.endswith(IGNORED_SUFFIXES)
                     and not (tied and n == LM_HEAD))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"update_weights must push every weight of the model (vLLM reloads whole layers); "
                         f"missing: {shown}")
    return pairs


def full_tensors(pairs: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield detached full tensors, gathering a sharded (DTensor) parameter only when its turn comes."""
    for name, tensor in pairs:
        tensor = tensor.detach()
        if _is_dtensor(tensor):
            tensor = tensor.full_tensor()  # a collective: every rank walks the same names in the same order
        yield name, tensor


def _is_dtensor(tensor: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return False
    return isinstance(tensor, DTensor)


# -- functions run inside the engine on its model (LLM.apply_model) ------------------------


def refresh_tied_lm_head(model: torch.nn.Module) -> None:
    """Rebuild the output projection's kernel from the (tied) embedding matrix just reloaded.

    vLLM's reload skips `lm_head` when it is tied to the embedding, so on CPU the oneDNN
    handle packed from the old embedding stays in use and logits come from stale weights.
    On GPU the processing step is a no-op and the tensor is shared, so this costs nothing.
    """
    lm_head = getattr(model, "lm_head", None)
    method = getattr(lm_head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(lm_head)


@torch.no_grad()
def read_engine_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The engine's weights under checkpoint names, as the engine actually computes with them.

    On CPU vLLM keeps linear weights only inside packed kernels, so each linear layer is
    probed with an identity matrix (x @ W.T with x = I gives W.T) and fused layers (qkv,
    gate_up) are split back into their checkpoint tensors. For one tensor-parallel rank.
    """
    from vllm.model_executor.layers.linear import LinearBase
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    fused = getattr(model, "packed_modules_mapping", {})
    out: dict[str, torch.Tensor] = {}
    for prefix, module in model.named_modules():
        leaf = prefix.rpartition(".")[2]
        if isinstance(module, (LinearBase, ParallelLMHead)):
            weight = _probe_linear(module)
            if isinstance(module, ParallelLMHead):
                weight = weight[: module.org_vocab_size]
            parts = fused.get(leaf, [leaf])
            sizes = list(getattr(module, "output_partition_sizes", [weight.shape[0]]))
            bias = getattr(module, "bias", None)
            parent = prefix[: len(prefix) - len(leaf)]
            for part, w in zip(parts, weight.split(sizes, dim=0), strict=True):
                out[f"{parent}{part}.weight"] = w.clone()
            if bias is not None:
                for part, b in zip(parts, bias.detach().split(sizes, dim=0), strict=True):
                    out[f"{parent}{part}.bias"] = b.clone()
        elif isinstance(module, VocabParallelEmbedding):
            out[f"{prefix}.weight"] = module.weight.detach()[: module.org_vocab_size].clone()
        else:
            for name, param in module.named_parameters(recurse=False):
                out[f"{prefix}.{name}"] = param.detach().clone()
    return out


def _probe_linear(module: torch.nn.Module) -> torch.Tensor:
    """W [out, in] of a (possibly packed) vLLM linear layer, without its bias."""
    size = module.embedding_dim if hasattr(module, "embedding_dim") else module.input_size_per_partition
    dtype = getattr(module, "params_dtype", torch.float32)
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    eye = torch.eye(size, dtype=dtype, device=device)
    return module.quant_method.apply(module, eye).T
