"""sdist -> wheel -> fresh venv: a file missing from either archive fails here, not on a user's machine."""

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sh(*cmd, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(dist), str(ROOT))
    (sdist,) = dist.glob("r3fast-*.tar.gz")
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(sdist),
       env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": "2"})
    (whl,) = dist.glob("r3fast-*.whl")
    return whl


def test_wheel_holds_native_module_kernels_and_presets(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("r3fast/_native") and n.endswith(".so") for n in names)
    assert "r3fast/kernels/__init__.py" in names
    assert "r3fast/cli.py" in names
    assert not any(n.startswith(("tests/", "benches/", "csrc/")) for n in names)


def test_wheel_installs_and_imports_in_a_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    target = sh(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # Install the wheel alone (--no-deps); torch & co. come from this interpreter's site-packages through a
    # .pth placed after the venv's own, so r3fast itself must resolve to the freshly installed copy.
    sh(sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, str(wheel))
    Path(target, "zz_host_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    probe = ("import r3fast, r3fast._native, r3fast.kernels, r3fast.cli;"
             "print(r3fast.__file__); print(r3fast.kernels.__file__); print(r3fast._native.build_info()['flags'])")
    out = sh(str(py), "-c", probe, cwd=tmp_path).stdout.splitlines()
    assert out[0].startswith(target) and out[1].startswith(target), out
    assert out[2] == "release -O3"
