"""Peak resident memory of one loss variant's forward + backward, above a baseline holding its inputs.

Run in a fresh process per variant (torch's CPU allocations are invisible to tracemalloc):
    python benches/_loss_peak_rss.py VARIANT SIZE
prints one JSON line {"variant", "size", "extra_mb", "weight_grad_mb", "loss"}.
The high-water mark is reset (/proc/self/clear_refs) after the inputs exist and the variant has
run once on a tiny warm-up problem, so imports and compiled code are not counted.
"""

from __future__ import annotations

import gc
import json
import os
import sys

import torch
from _loss_variants import SIZES, VARIANTS, WARMUP, make_variant_inputs


def status_mb(field: str) -> float:
    """A /proc/self/status memory field (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(variant: str, size_name: str) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    run = VARIANTS[variant]
    run(make_variant_inputs(variant, WARMUP[size_name]))
    inputs = make_variant_inputs(variant, SIZES[size_name])
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    baseline = status_mb("VmRSS")
    loss = run(inputs)
    extra = status_mb("VmHWM") - baseline
    print(json.dumps({"variant": variant, "size": size_name, "extra_mb": round(extra, 1),
                      "weight_grad_mb": round(SIZES[size_name].weight_grad_mb, 1), "loss": float(loss.detach())}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
