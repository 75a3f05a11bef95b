"""Builds the native core with ASan + UBSan and runs the hostile, differential and thread verifier tests on it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/test_verify_hostile.py",
    "tests/test_verify_countdown.py",
    "tests/test_verify_function_calls.py",
    "tests/test_verify_threads.py",  # batches checked on worker threads while Python code mutates their inputs
]

# Loads the sanitized build as r3fast._native before r3fast.verify imports it, then runs pytest.
BOOTSTRAP = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("r3fast._native", sys.argv[1])
native = importlib.util.module_from_spec(spec)
spec.loader.exec_module(native)
sys.modules["r3fast._native"] = native
assert native.build_info()["sanitized"], native.build_info()
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def _runtime(name: str) -> str:
    path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"{name} not found: the sanitizer runtime is needed to load a sanitized extension")
    return path


def test_hostile_and_differential_tests_pass_under_asan_and_ubsan(tmp_path):
    if shutil.which("cmake") is None or shutil.which("g++") is None:
        pytest.skip("cmake and g++ are needed for the sanitizer build")
    preload = f"{_runtime('libasan.so')}:{_runtime('libubsan.so')}"
    pybind11_dir = subprocess.run(
        [sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    build = tmp_path / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build),
            *generator,
            "-DR3FAST_SANITIZE=ON",
            f"-Dpybind11_DIR={pybind11_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["cmake", "--build", str(build), "-j", "2"], check=True, capture_output=True)
    (native,) = build.glob("_native*.so")

    env = dict(
        os.environ,
        LD_PRELOAD=preload,
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        R3FAST_VERIFY_EXAMPLES_SCALE="0.15",
        PYTHONMALLOC="malloc",  # Python objects from malloc, so ASan also sees a read of a freed one
    )
    result = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, str(native), *TESTS, "-q", "-x", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
