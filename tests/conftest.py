"""Fixtures shared across the test suite."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    """(model, tokenizer) of `tiny-random`: a 2-layer random Llama with the SmolLM2 tokenizer."""
    import torch

    from r3fast.models import load

    torch.set_num_threads(1)  # the suite shares the machine's cores; a tiny model gains nothing from more
    return load("tiny-random")
