"""Tile sizes, warps and pipeline stages of the Triton kernels in triton_fused.py, per GPU and dtype.

Two limits decide what a configuration may ask for. A block that needs more shared memory than
the GPU allows per block fails to launch ("out of resources"); sm_86 and sm_89 (A10, A40, L4,
L40S, RTX 30xx/40xx) allow 99 KB where sm_80 allows 163 KB. A tile that needs more registers than
a thread gets spills to local memory, which is slow; the fp32 kernels multiply on
the FMA units (IEEE dots), whose operands all live in registers, so their tiles are smaller.

tests/test_kernels_compile.py compiles each entry below for the architectures among sm_80, sm_86,
sm_89 and sm_90 that get it, and checks shared memory and spills; `shared_memory` bounds what its
kernels used there. A GPU gets the largest entry that fits its per-block limit, so a new
architecture with the same limit gets a configuration already checked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

KB = 1024

# Maximum shared memory per thread block (opt-in), from NVIDIA's CUDA C++ Programming Guide,
# "Technical Specifications per Compute Capability", restated in the tuning guides (section
# 1.4.1.1 of the Ampere, Ada and Hopper guides). Used where no device is at hand to ask (AOT
# compiles); on a CUDA device its own shared_memory_per_block_optin is used instead.
SHARED_MEMORY_PER_BLOCK = {
    (8, 0): 163 * KB,  # A100, A30
    (8, 6): 99 * KB,  # A10, A40, RTX 30xx
    (8, 9): 99 * KB,  # L4, L40S, RTX 40xx
    (9, 0): 227 * KB,  # H100, H200
    (10, 0): 227 * KB,  # B200
    (12, 0): 99 * KB,  # RTX 50xx
}


@dataclass(frozen=True)
class KernelConfig:
    block_m: int  # token rows per tile
    block_n: int  # vocab columns per tile
    block_hidden: int  # hidden columns per tile: BLOCK_K of the forward matmul, BLOCK_H of the gradients
    num_warps: int
    num_stages: int  # software-pipeline depth of the main loop's loads (each stage holds one tile per operand)


@dataclass(frozen=True)
class LaunchConfig:
    logits: KernelConfig  # _logits_lse_kernel
    grad_hidden: KernelConfig  # _grad_hidden_kernel
    grad_weight: KernelConfig  # _grad_weight_kernel
    shared_memory: int  # bytes per block, at least what the hungriest of the three used when compiled


# bf16/fp16, for 112 KB and more per block (sm_80, sm_90): the big tiles. grad_hidden takes 128 rows
# x 64 vocab per step instead: 64 x 128 spilled on sm_90 with 4 warps and on sm_80 with 8.
_HALF_LARGE = LaunchConfig(
    logits=KernelConfig(64, 128, 64, num_warps=8, num_stages=3),
    grad_hidden=KernelConfig(128, 64, 64, num_warps=8, num_stages=3),
    grad_weight=KernelConfig(64, 128, 64, num_warps=8, num_stages=3),
    shared_memory=112 * KB,
)
# bf16/fp16 within 99 KB (sm_86, sm_89, sm_120): the gradients take 64-wide vocab tiles and keep
# three stages; the forward fits as it is.
_HALF_SMALL = LaunchConfig(
    logits=KernelConfig(64, 128, 64, num_warps=8, num_stages=3),
    grad_hidden=KernelConfig(64, 64, 64, num_warps=4, num_stages=3),
    grad_weight=KernelConfig(64, 64, 64, num_warps=4, num_stages=3),
    shared_memory=64 * KB,
)
# fp32: registers, not shared memory, bound the tiles; the largest without spills on every
# architecture checked.
_FP32 = LaunchConfig(
    logits=KernelConfig(64, 64, 32, num_warps=8, num_stages=2),
    grad_hidden=KernelConfig(64, 64, 32, num_warps=8, num_stages=3),
    grad_weight=KernelConfig(32, 64, 32, num_warps=4, num_stages=3),
    shared_memory=64 * KB,
)
# By element size, largest first.
_CONFIGS = {2: (_HALF_LARGE, _HALF_SMALL), 4: (_FP32,)}

# The CPU interpreter runs each program in numpy: small tiles keep the padded work small. Warps
# and stages mean nothing there.
INTERPRETER = LaunchConfig(
    logits=KernelConfig(16, 16, 16, num_warps=4, num_stages=1),
    grad_hidden=KernelConfig(16, 16, 16, num_warps=4, num_stages=1),
    grad_weight=KernelConfig(16, 16, 16, num_warps=4, num_stages=1),
    shared_memory=0,
)

# No chunk has fewer rows than this: one full row tile of any configuration.
MAX_BLOCK_M = max(c.block_m for cs in _CONFIGS.values() for cfg in cs
                  for c in (cfg.logits, cfg.grad_hidden, cfg.grad_weight))

_ELEMENT_SIZE = {torch.bfloat16: 2, torch.float16: 2, torch.float32: 4}


@functools.cache
def launch_config(
    capability: tuple[int, int] | None, dtype: torch.dtype, shared_memory_per_block: int | None = None
) -> LaunchConfig:
    """The configuration for a GPU of this compute capability and these input dtypes.

    capability None means the Triton CPU interpreter. shared_memory_per_block (bytes, opt-in
    limit) defaults to the table above for the capability; pass the device's own where known.
    """
    if capability is None:
        return INTERPRETER
    if dtype not in _ELEMENT_SIZE:
        raise ValueError(f"dtype must be one of {tuple(_ELEMENT_SIZE)} for the Triton kernels, got {dtype}")
    limit = shared_memory_per_block
    if limit is None:
        if capability not in SHARED_MEMORY_PER_BLOCK:
            raise ValueError(f"no shared-memory limit known for compute capability {capability} (known: "
                             f"{sorted(SHARED_MEMORY_PER_BLOCK)}); pass shared_memory_per_block")
        limit = SHARED_MEMORY_PER_BLOCK[capability]
    candidates = _CONFIGS[_ELEMENT_SIZE[dtype]]
    for config in candidates:
        if config.shared_memory <= limit:
            return config
    raise ValueError(f"the {dtype} Triton kernels need {candidates[-1].shared_memory // KB} KB of shared memory "
                     f"per block; compute capability {capability} allows {limit // KB} KB")


def device_launch_config(device: torch.device, dtype: torch.dtype) -> LaunchConfig:
    """launch_config for a CUDA device, with the capability and shared-memory limit it reports."""
    if device.type != "cuda":
        raise ValueError(f"the Triton kernels run on CUDA devices (or under TRITON_INTERPRET=1), got {device}")
    props = torch.cuda.get_device_properties(device)
    return launch_config((props.major, props.minor), dtype, getattr(props, "shared_memory_per_block_optin", None))
