"""The one place that decides which implementation of the GRPO loss runs."""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "triton", "torch")


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def resolve_backend(
    backend: str = "auto", device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> str:
    """"auto" is Triton for CUDA tensors and the chunked torch path elsewhere (and for fp64,
    which the kernels do not handle).

    "triton" on a CPU tensor is honoured only under TRITON_INTERPRET=1 (the interpreter
    used in tests); anything else would fail deep inside a launch, so it fails here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if device is None:
        on_cuda = torch.cuda.is_available()
    triton_dtype = dtype is None or dtype in TRITON_DTYPES
    if backend == "auto":
        return "triton" if on_cuda and triton_dtype and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend='triton' needs the triton package (pip install 'r3fast[triton]')")
        if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 for the CPU interpreter")
        if not triton_dtype:
            raise ValueError(f"backend='triton' takes {TRITON_DTYPES} inputs, got {dtype}; use backend='torch'")
    return backend
