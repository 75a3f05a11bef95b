"""The install itself: the native extension loads, and `r3fast env` reports what is really there."""

import json
import subprocess
import sys

import torch

import r3fast
from r3fast.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r3fast", *args], capture_output=True, text=True, timeout=120)


def test_native_extension_imports_with_build_info():
    from r3fast import _native

    info = _native.build_info()
    assert info["flags"] in ("release -O3", "asan+ubsan -O1 -g")
    assert isinstance(info["sanitized"], bool)


def test_env_json_reports_loaded_extension_and_real_versions():
    out = run_cli("env", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["native"]["loaded"] is True
    assert report["versions"]["torch"] == torch.__version__
    assert report["r3fast"] == r3fast.__version__
    # No CUDA here means an empty device list, and the loss falls back to the torch path.
    assert (report["cuda_devices"] == []) == (not torch.cuda.is_available())
    if not torch.cuda.is_available():
        assert report["backends"]["loss"] == "torch"
    assert report["backends"]["rollout"] in ("hf", "vllm")
    with open("/proc/cpuinfo") as f:
        has_avx2 = " avx2 " in f.read().replace("\n", " ")
    assert report["cpu"]["avx2"] == has_avx2


def test_env_text_report_names_every_section(capsys):
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    for row in ("torch", "triton", "vllm", "transformers", "native extension", "CUDA devices", "CPU",
                "loss backend", "rollout engine"):
        assert row in text


def test_version_and_help():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"r3fast {r3fast.__version__}"
    out = run_cli("--help")
    assert out.returncode == 0 and "env" in out.stdout


def test_unknown_command_is_a_usage_error():
    out = run_cli("no-such-command")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr
