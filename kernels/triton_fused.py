"""Chunk steps of the fused lm_head + GRPO loss as Triton kernels (CUDA, or the CPU interpreter).

Per chunk of loss tokens:
  1. _logits_lse_kernel: lm_head matmul tiles with an online log-sum-exp over the vocab tiles of
     each split of the vocabulary; writes the chunk's fp32 logits once, plus per-split (max, sum,
     sum of exp * logit for the entropy) and the target's logit. The splits are combined in a few
     [splits, rows] torch ops.
  2. _grad_hidden_kernel: d(loss)/d(logits) = coef * (onehot - softmax) formed on the fly from
     the stored logits, times the weight, summed over the vocab.
  3. _grad_weight_kernel: the same d(loss)/d(logits) tiles, transposed, times the chunk's hidden
     states; added into the fp32 weight gradient (and bias gradient). Each program owns its own
     [vocab, hidden] tile, so no atomics.
Tokens never sit on grid axis 1 or 2 (65,535 limit): rows go on axis 0, and the vocab split on
axis 1 is at most a few hundred. bf16/fp16 inputs are multiplied by tl.dot with fp32 accumulation;
fp32 inputs use IEEE fp32 dots (no TF32), so results match the torch path to fp32 rounding.
Offsets into the weight and logits use 64-bit arithmetic: vocab x hidden can pass 2**31.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .grpo_math import accumulation_dtype
from .launch_config import MAX_BLOCK_M, LaunchConfig, device_launch_config, launch_config

# Bytes of one chunk's fp32 logits on the GPU: large enough that the grid fills the device.
CHUNK_BYTES = 512 * 1024 * 1024


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc + a @ b. UPCAST multiplies in fp32: the interpreter's bf16 tl.dot returns garbage."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _logits_lse_kernel(
    hidden_ptr, weight_ptr, bias_ptr, target_ptr, logits_ptr,
    part_max_ptr, part_sum_ptr, part_target_ptr, part_dot_ptr,
    n_rows, vocab, hidden_size, tiles_per_split, inv_temperature,
    stride_hm, stride_wv, stride_lm,
    HAS_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    targets = tl.load(target_ptr + rows, mask=row_ok, other=-1)
    run_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_M,), tl.float32)
    run_dot = tl.zeros((BLOCK_M,), tl.float32)  # sum of exp(logit - run_max) * logit, for the entropy
    target_logit = tl.zeros((BLOCK_M,), tl.float32)
    for t in range(0, tiles_per_split):
        cols = (split * tiles_per_split + t) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < vocab
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(0, hidden_size, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_ok = ks < hidden_size
            h = tl.load(hidden_ptr + rows[:, None] * stride_hm + ks[None, :],
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(weight_ptr + cols[:, None].to(tl.int64) * stride_wv + ks[None, :],
                        mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            acc = _mma(h, tl.trans(w), acc, PRECISION, UPCAST)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        acc = acc * inv_temperature
        tl.store(logits_ptr + rows[:, None].to(tl.int64) * stride_lm + cols[None, :], acc,
                 mask=row_ok[:, None] & col_ok[None, :])
        acc = tl.where(col_ok[None, :], acc, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(acc, axis=1))
        exps = tl.exp(acc - new_max[:, None])
        rescale = tl.exp(run_max - new_max)
        run_sum = run_sum * rescale + tl.sum(exps, axis=1)
        run_dot = run_dot * rescale + tl.sum(exps * tl.where(col_ok[None, :], acc, 0.0), axis=1)
        run_max = new_max
        target_logit += tl.sum(tl.where(cols[None, :] == targets[:, None], acc, 0.0), axis=1)
    out = split * n_rows + rows
    tl.store(part_max_ptr + out, run_max, mask=row_ok)
    tl.store(part_sum_ptr + out, run_sum, mask=row_ok)
    tl.store(part_target_ptr + out, target_logit, mask=row_ok)
    tl.store(part_dot_ptr + out, run_dot, mask=row_ok)


@triton.jit
def _dlogits_tile(logits_ptr, stride_lm, rows, cols, row_ok, col_ok, lse, coef, targets):
    """coef * (onehot(target) - softmax) for one [rows, cols] tile, zero outside the bounds."""
    logits = tl.load(logits_ptr + rows[:, None].to(tl.int64) * stride_lm + cols[None, :],
                     mask=row_ok[:, None] & col_ok[None, :], other=float("-inf"))
    probs = tl.exp(logits - lse[:, None])
    onehot = (cols[None, :] == targets[:, None]).to(tl.float32)
    dlogits = coef[:, None] * (onehot - probs)
    return tl.where(row_ok[:, None] & col_ok[None, :], dlogits, 0.0)


@triton.jit
def _grad_hidden_kernel(
    logits_ptr, lse_ptr, coef_ptr, target_ptr, weight_ptr, grad_hidden_ptr,
    n_rows, vocab, hidden_size,
    stride_lm, stride_wv, stride_gm,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_h = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_rows
    hs = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = hs < hidden_size
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    coef = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    targets = tl.load(target_ptr + rows, mask=row_ok, other=-1)
    acc = tl.zeros((BLOCK_M, BLOCK_H), tl.float32)
    for v0 in range(0, vocab, BLOCK_N):
        cols = v0 + tl.arange(0, BLOCK_N)
        col_ok = cols < vocab
        dlogits = _dlogits_tile(logits_ptr, stride_lm, rows, cols, row_ok, col_ok, lse, coef, targets)
        w = tl.load(weight_ptr + cols[:, None].to(tl.int64) * stride_wv + hs[None, :],
                    mask=col_ok[:, None] & h_ok[None, :], other=0.0)
        acc = _mma(dlogits.to(w.dtype), w, acc, PRECISION, UPCAST)
    tl.store(grad_hidden_ptr + rows[:, None] * stride_gm + hs[None, :],
             acc.to(grad_hidden_ptr.dtype.element_ty), mask=row_ok[:, None] & h_ok[None, :])


@triton.jit
def _grad_weight_kernel(
    logits_ptr, lse_ptr, coef_ptr, target_ptr, hidden_ptr, grad_weight_ptr, grad_bias_ptr,
    n_rows, vocab, hidden_size,
    stride_lm, stride_hm, stride_gv,
    HAS_GRAD_WEIGHT: tl.constexpr, HAS_GRAD_BIAS: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid_v = tl.program_id(0)
    pid_h = tl.program_id(1)
    cols = pid_v * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < vocab
    hs = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    h_ok = hs < hidden_size
    acc = tl.zeros((BLOCK_N, BLOCK_H), tl.float32)
    bias_acc = tl.zeros((BLOCK_N,), tl.float32)
    for m0 in range(0, n_rows, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
        coef = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
        targets = tl.load(target_ptr + rows, mask=row_ok, other=-1)
        dlogits = _dlogits_tile(logits_ptr, stride_lm, rows, cols, row_ok, col_ok, lse, coef, targets)
        if HAS_GRAD_WEIGHT:
            h = tl.load(hidden_ptr + rows[:, None] * stride_hm + hs[None, :],
                        mask=row_ok[:, None] & h_ok[None, :], other=0.0)
            acc = _mma(tl.trans(dlogits.to(h.dtype)), h, acc, PRECISION, UPCAST)
        if HAS_GRAD_BIAS:
            bias_acc += tl.sum(dlogits, axis=0)
    if HAS_GRAD_WEIGHT:
        out = grad_weight_ptr + cols[:, None].to(tl.int64) * stride_gv + hs[None, :]
        ok = col_ok[:, None] & h_ok[None, :]
        tl.store(out, tl.load(out, mask=ok, other=0.0) + acc, mask=ok)
    if HAS_GRAD_BIAS:
        if pid_h == 0:
            prev = tl.load(grad_bias_ptr + cols, mask=col_ok, other=0.0)
            tl.store(grad_bias_ptr + cols, prev + bias_acc, mask=col_ok)


# ---- launchers ----


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _launch_config(device: torch.device, dtype: torch.dtype) -> LaunchConfig:
    """Tiles, warps and stages for this device and dtype (see launch_config.py)."""
    return launch_config(None, dtype) if _interpreted() else device_launch_config(device, dtype)


def _precision(dtype: torch.dtype) -> str | None:
    return "ieee" if dtype in (torch.float32, torch.float64) else None


def _upcast(dtype: torch.dtype) -> bool:
    return _interpreted() and dtype in (torch.bfloat16, torch.float16)


def rows_per_chunk(vocab: int, dtype: torch.dtype) -> int:
    if _interpreted():
        return 32  # several chunks even on the tiny shapes the interpreter can afford
    return max(MAX_BLOCK_M, CHUNK_BYTES // (vocab * 4))


def _vocab_splits(n_row_blocks: int, n_tiles: int, device: torch.device) -> int:
    """Enough vocab splits that row blocks x splits fills the device a few times over."""
    if device.type == "cuda":
        target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        target = 3  # the interpreter: exercise the split combine without much extra work
    return max(1, min(n_tiles, triton.cdiv(target, n_row_blocks)))


def logits_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32


@dataclass
class ChunkState:
    logits: torch.Tensor  # [rows, vocab] fp32, already divided by the temperature
    lse: torch.Tensor  # [rows] fp32 log-sum-exp of those logits


def chunk_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target_ids: torch.Tensor,
    temperature: float,
    out: torch.Tensor,
) -> tuple[ChunkState, torch.Tensor, torch.Tensor]:
    """Same contract as torch_fused.chunk_forward."""
    hidden = hidden.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    n_rows, hidden_size = hidden.shape
    vocab = weight.shape[0]
    b = _launch_config(hidden.device, hidden.dtype).logits
    n_row_blocks = triton.cdiv(n_rows, b.block_m)
    n_tiles = triton.cdiv(vocab, b.block_n)
    splits = _vocab_splits(n_row_blocks, n_tiles, hidden.device)
    tiles_per_split = triton.cdiv(n_tiles, splits)
    splits = triton.cdiv(n_tiles, tiles_per_split)  # no empty split
    logits = out
    part = torch.empty((4, splits, n_rows), dtype=torch.float32, device=hidden.device)
    _logits_lse_kernel[(n_row_blocks, splits)](
        hidden, weight, bias if bias is not None else hidden, target_ids, logits,
        part[0], part[1], part[2], part[3],
        n_rows, vocab, hidden_size, tiles_per_split, 1.0 / temperature,
        hidden.stride(0), weight.stride(0), logits.stride(0),
        HAS_BIAS=bias is not None, PRECISION=_precision(hidden.dtype), UPCAST=_upcast(hidden.dtype),
        BLOCK_M=b.block_m, BLOCK_N=b.block_n, BLOCK_K=b.block_hidden,
        num_warps=b.num_warps, num_stages=b.num_stages,
    )
    part_max, part_sum, part_target, part_dot = part
    top = part_max.amax(dim=0)
    rescale = torch.exp(part_max - top)
    sum_exp = (part_sum * rescale).sum(dim=0)
    lse = top + sum_exp.log()
    logp = part_target.sum(dim=0) - lse
    entropy = lse - (part_dot * rescale).sum(dim=0) / sum_exp  # log Z - E_p[logit]
    acc = accumulation_dtype(hidden.dtype)
    return ChunkState(logits, lse), logp.to(acc), entropy.to(acc)


def chunk_backward(
    state: ChunkState,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target_ids: torch.Tensor,
    coef: torch.Tensor,
    grad_weight: torch.Tensor | None,
    grad_bias: torch.Tensor | None,
    need_grad_hidden: bool,
) -> torch.Tensor | None:
    """Same contract as torch_fused.chunk_backward."""
    hidden = hidden.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    n_rows, hidden_size = hidden.shape
    vocab = weight.shape[0]
    config = _launch_config(hidden.device, hidden.dtype)
    coef = coef.to(torch.float32).contiguous()
    precision = _precision(hidden.dtype)
    grad_hidden = None
    if need_grad_hidden:
        grad_hidden = torch.empty_like(hidden)
        b = config.grad_hidden
        _grad_hidden_kernel[(triton.cdiv(n_rows, b.block_m), triton.cdiv(hidden_size, b.block_hidden))](
            state.logits, state.lse, coef, target_ids, weight, grad_hidden,
            n_rows, vocab, hidden_size,
            state.logits.stride(0), weight.stride(0), grad_hidden.stride(0),
            PRECISION=precision, UPCAST=_upcast(hidden.dtype),
            BLOCK_M=b.block_m, BLOCK_N=b.block_n, BLOCK_H=b.block_hidden,
            num_warps=b.num_warps, num_stages=b.num_stages,
        )
    if grad_weight is not None or grad_bias is not None:
        if grad_weight is not None and grad_weight.dtype != torch.float32:
            raise ValueError(f"the Triton path accumulates the weight gradient in fp32, got {grad_weight.dtype}")
        b = config.grad_weight
        _grad_weight_kernel[(triton.cdiv(vocab, b.block_n), triton.cdiv(hidden_size, b.block_hidden))](
            state.logits, state.lse, coef, target_ids, hidden,
            grad_weight if grad_weight is not None else state.logits,
            grad_bias if grad_bias is not None else state.lse,
            n_rows, vocab, hidden_size,
            state.logits.stride(0), hidden.stride(0), hidden_size if grad_weight is None else grad_weight.stride(0),
            HAS_GRAD_WEIGHT=grad_weight is not None, HAS_GRAD_BIAS=grad_bias is not None,
            PRECISION=precision, UPCAST=_upcast(hidden.dtype),
            BLOCK_M=b.block_m, BLOCK_N=b.block_n, BLOCK_H=b.block_hidden,
            num_warps=b.num_warps, num_stages=b.num_stages,
        )
    return grad_hidden
