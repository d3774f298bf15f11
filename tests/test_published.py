"""Checks on the real published weights. The hub is out of reach here, so these run only when an environment
variable points at a local snapshot of the model repo:

    TINYGPT_DISTILGPT2_DIR=/path/to/distilgpt2 python -m pytest tests/test_published.py
    TINYGPT_UER_DIR=/path/to/gpt2-distil-chinese-cluecorpussmall python -m pytest tests/test_published.py
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from tinygpt.model import Model

pytestmark = pytest.mark.published


def published_dir(variable: str) -> str:
    path = os.environ.get(variable)
    if not path:
        pytest.skip(f"set {variable} to a local copy of the published model to run this test")
    return path


@pytest.mark.parametrize("variable", ["TINYGPT_DISTILGPT2_DIR", "TINYGPT_UER_DIR"])
def test_published_logits_match_transformers(variable):
    import torch
    from transformers import GPT2LMHeadModel

    path = published_dir(variable)
    model = Model.from_pretrained(path)
    hf = GPT2LMHeadModel.from_pretrained(path).eval()
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, 64)
    with torch.no_grad():
        expected = hf(torch.tensor(ids[None])).logits[0].numpy()
    # Trained weights have larger logits than our random test models (~|100| for distilgpt2); the same
    # float32 rounding argument as in test_model.py gives 1e-5 relative.
    np.testing.assert_allclose(model.logits(ids), expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_distilgpt2_greedy_continuation_of_the_president():
    from tinygpt.generation import generate

    model = Model.from_pretrained(published_dir("TINYGPT_DISTILGPT2_DIR"))
    # transformers' greedy output for "The president", pinned.
    expected = [464, 1893, 286, 262, 1578, 1829, 11, 290, 262, 1893, 286, 262, 1578, 7526, 11, 423, 587, 287,
                262, 2635]
    assert generate(model, [464, 1893], max_length=20) == [expected]
