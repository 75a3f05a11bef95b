"""Every Triton kernel compiles for sm_80, sm_86, sm_89 and sm_90 with the launch configuration
kernels/launch_config.py picks, fits that architecture's shared memory and spills no registers.

No GPU is needed: triton.compile(ASTSource, target=GPUTarget) runs the whole pipeline down to a
cubin with the ptxas shipped in the triton wheel. The kernels' arguments come from the launchers
themselves: the fused loss runs once on CPU tensors with every kernel replaced by a recorder, so
the compiled signatures follow the launchers whenever a kernel gains or loses an argument.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

triton = pytest.importorskip("triton")
from r3fast.kernels import api, triton_fused  # noqa: E402
from r3fast.kernels.launch_config import (  # noqa: E402
    INTERPRETER,
    KB,
    LaunchConfig,
    device_launch_config,
    launch_config,
)
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

# Maximum shared memory per thread block (opt-in), bytes: NVIDIA CUDA C++ Programming Guide,
# "Technical Specifications per Compute Capability"; the same figures are in section 1.4.1.1 of
# the Ampere (8.0: 163 KB, 8.6: 99 KB), Ada (8.9: 99 KB) and Hopper (9.0: 227 KB) tuning guides.
# Kept apart from launch_config's own table so that a wrong entry there cannot hide here.
SHARED_MEMORY_LIMIT = {80: 163 * KB, 86: 99 * KB, 89: 99 * KB, 90: 227 * KB}
CAPABILITY = {80: (8, 0), 86: (8, 6), 89: (8, 9), 90: (9, 0)}

# Every architecture gets bf16 and fp32. fp16 takes bf16's configuration (same element size) and
# the same code; only the tensor-core instruction's input type differs, so it is compiled once
# per instruction family: mma.sync on sm_86 (the tightest shared memory) and wgmma on sm_90.
CASES = [(arch, dtype) for arch in SHARED_MEMORY_LIMIT for dtype in (torch.bfloat16, torch.float32)]
CASES += [(86, torch.float16), (90, torch.float16)]

TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
                torch.int64: "i64", torch.int32: "i32", torch.bool: "i1", torch.uint8: "u8"}


@dataclass(frozen=True)
class Launch:
    kernel: str  # the JIT function's name in triton_fused
    signature: dict  # argument name -> Triton type ("*bf16", "i32", ...) or "constexpr"
    constexprs: dict  # constexpr argument name -> value
    attrs: dict  # (argument index,) -> specialisation attributes, as a real launch would have them
    options: dict  # num_warps, num_stages


@dataclass(frozen=True)
class Usage:
    shared: int  # bytes of shared memory per block
    registers: int  # per thread
    spill_stores: int  # bytes, as ptxas reports them


def launched_kernels() -> list[str]:
    return sorted(name for name, obj in vars(triton_fused).items()
                  if isinstance(obj, triton.runtime.JITFunction) and name.endswith("_kernel"))


class _Recorder:
    """Stands in for a @triton.jit kernel: `kernel[grid](*args, **kwargs)` records the launch."""

    def __init__(self, fn, launches: dict):
        self.fn, self.launches = fn, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            options = {k: kwargs.pop(k) for k in list(kwargs) if k not in self.fn.arg_names}
            bound = inspect.signature(self.fn.fn).bind(*args, **kwargs).arguments
            signature, constexprs, attrs = {}, {}, {}
            for i, param in enumerate(self.fn.params):
                value = bound[param.name]
                if param.is_constexpr:
                    signature[param.name], constexprs[param.name] = "constexpr", value
                    continue
                signature[param.name] = _triton_type(param.name, value)
                # A real launch marks 16-byte-aligned pointers and multiples of 16 (what strides
                # and sizes are in practice); the compiler vectorises and pipelines on them.
                aligned = value.data_ptr() % 16 == 0 if isinstance(value, torch.Tensor) else (
                    isinstance(value, int) and not isinstance(value, bool) and value % 16 == 0)
                if aligned:
                    attrs[(i,)] = [["tt.divisibility", 16]]
            self.launches.setdefault(self.fn.__name__, Launch(self.fn.__name__, signature, constexprs, attrs,
                                                               options))
        return launch


def _triton_type(name: str, value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + TRITON_TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"kernel argument {name} is a {type(value).__name__}; add it to _triton_type")


def record_launches(capability: tuple[int, int], dtype: torch.dtype) -> dict[str, Launch]:
    """The launches of one forward and backward of the fused loss (bias and every gradient on),
    as the launchers would make them on a GPU of this capability."""
    launches: dict[str, Launch] = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in launched_kernels():
            mp.setattr(triton_fused, name, _Recorder(getattr(triton_fused, name), launches))
        mp.setattr(triton_fused, "_launch_config", lambda device, dt: launch_config(capability, dt))
        mp.setattr(api, "resolve_backend", lambda *args, **kwargs: "triton")
        g = torch.Generator().manual_seed(0)
        n, hidden_size, vocab = 64, 128, 512
        hidden = torch.randn(n, hidden_size, generator=g).to(dtype).requires_grad_()
        weight = torch.randn(vocab, hidden_size, generator=g).to(dtype).requires_grad_()
        bias = torch.randn(vocab, generator=g).to(dtype).requires_grad_()
        targets = torch.randint(0, vocab, (n,), generator=g)
        api.fused_linear_grpo_loss(hidden, weight, targets, torch.randn(n, generator=g),
                                   torch.ones(n, dtype=torch.bool), bias=bias, backend="triton")
    return launches


def compile_for(launch: Launch, arch: int) -> Usage:
    """AOT-compile one launch for sm_<arch>; shared memory from Triton, registers and spills from
    ptxas's own report (Triton prints it with dump_ptxas_log; always_compile makes ptxas run)."""
    from triton import knobs

    knobs.compilation.always_compile = True
    knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        compiled = triton.compile(
            ASTSource(fn=getattr(triton_fused, launch.kernel), signature=launch.signature,
                      constexprs=launch.constexprs, attrs=launch.attrs),
            target=GPUTarget("cuda", arch, 32), options=launch.options,
        )
    report = log.getvalue()
    spills = re.search(r"(\d+) bytes spill stores", report)
    registers = re.search(r"Used (\d+) registers", report)
    if not (spills and registers):
        raise RuntimeError(f"no ptxas report for {launch.kernel} on sm_{arch}: {report[-2000:]!r}")
    return Usage(compiled.metadata.shared, int(registers.group(1)), int(spills.group(1)))


@pytest.fixture(scope="module")
def usage() -> dict[tuple[int, torch.dtype], dict[str, Usage | Exception]]:
    """(arch, dtype) -> kernel -> Usage, or the exception its compile raised."""
    jobs = {(arch, dtype, name): launch for arch, dtype in CASES
            for name, launch in record_launches(CAPABILITY[arch], dtype).items()}
    # Two processes: compiles are single-threaded and CPU-bound; fork shares the imports.
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {key: pool.submit(compile_for, launch, key[0]) for key, launch in jobs.items()}
    out: dict = {}
    for (arch, dtype, name), future in futures.items():
        error = future.exception()
        out.setdefault((arch, dtype), {})[name] = error if error is not None else future.result()
    return out


def test_every_kernel_is_launched_by_the_loss():
    recorded = set(record_launches((8, 0), torch.bfloat16))
    assert recorded == set(launched_kernels()), (
        "every *_kernel in triton_fused.py must be launched by fused_linear_grpo_loss, or the compile "
        f"test never sees it: launched {sorted(recorded)}, defined {launched_kernels()}")


@pytest.mark.parametrize(("arch", "dtype"), CASES, ids=[f"sm_{a}-{str(d)[6:]}" for a, d in CASES])
def test_kernels_fit_in_shared_memory_without_spills(usage, arch, dtype):
    config = launch_config(CAPABILITY[arch], dtype)
    limit = SHARED_MEMORY_LIMIT[arch]
    problems = []
    for name, used in sorted(usage[(arch, dtype)].items()):
        if isinstance(used, Exception):
            problems.append(f"{name}: compile failed: {used}")
            continue
        if used.shared > limit:
            problems.append(f"{name}: {used.shared / KB:.1f} KB shared memory > sm_{arch}'s {limit // KB} KB")
        if used.shared > config.shared_memory:
            problems.append(f"{name}: {used.shared / KB:.1f} KB shared memory > the {config.shared_memory // KB} KB "
                            "its LaunchConfig declares (launch_config picks configs by that figure)")
        if used.spill_stores:
            problems.append(f"{name}: {used.spill_stores} bytes of register spills ({used.registers} registers)")
    assert usage[(arch, dtype)], f"nothing compiled for sm_{arch} {dtype}"
    assert not problems, f"sm_{arch} {dtype} with {config}:\n" + "\n".join(problems)


# ---- launch_config itself ----


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_big_gpus_keep_the_big_half_precision_tiles(capability):
    config = launch_config(capability, torch.bfloat16)
    assert (config.logits.block_m, config.logits.block_n, config.logits.block_hidden) == (64, 128, 64)
    assert config.grad_weight.block_n == 128 and config.logits.num_stages == 3
    assert launch_config(capability, torch.float16) == config


def test_a_smaller_shared_memory_gets_a_config_that_fits_it():
    for capability in ((8, 6), (8, 9)):
        for dtype in (torch.bfloat16, torch.float32):
            assert launch_config(capability, dtype).shared_memory <= 99 * KB
    # A device's own report decides over the table: an sm_90 part limited to 99 KB gets sm_86's tiles.
    assert launch_config((9, 0), torch.bfloat16, 99 * KB) == launch_config((8, 6), torch.bfloat16)


def test_a_cuda_device_is_asked_for_its_capability_and_limit(monkeypatch):
    def reported(major, minor, **limit):
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda device: SimpleNamespace(major=major, minor=minor, **limit))
        return device_launch_config(torch.device("cuda", 0), torch.bfloat16)

    assert reported(9, 0, shared_memory_per_block_optin=232_448) == launch_config((9, 0), torch.bfloat16)
    assert reported(9, 0, shared_memory_per_block_optin=99 * KB) == launch_config((8, 6), torch.bfloat16)
    assert reported(8, 9) == launch_config((8, 9), torch.bfloat16)  # an older torch: the table's limit


def test_launch_config_rejects_what_it_cannot_serve():
    with pytest.raises(ValueError, match=r"compute capability \(7, 2\)"):
        launch_config((7, 2), torch.bfloat16)
    with pytest.raises(ValueError, match="dtype must be one of"):
        launch_config((8, 0), torch.float64)
    with pytest.raises(ValueError, match="need 64 KB of shared memory per block"):
        launch_config((7, 5), torch.bfloat16, 48 * KB)
    with pytest.raises(ValueError, match="CUDA devices"):
        device_launch_config(torch.device("cpu"), torch.float32)


def test_the_interpreter_gets_small_tiles():
    config = launch_config(None, torch.float32)
    assert config is INTERPRETER and isinstance(config, LaunchConfig)
    assert {c.block_m for c in (config.logits, config.grad_hidden, config.grad_weight)} == {16}
