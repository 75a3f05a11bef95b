"""Skip markers shared by test files: each names the condition under which its tests cannot run."""

from __future__ import annotations

import importlib.util

import pytest

# BFCL's data ships in the bfcl-eval package (.ci/setup installs it); without it there is nothing to load.
needs_bfcl = pytest.mark.skipif(importlib.util.find_spec("bfcl_eval") is None, reason="bfcl-eval not installed")
