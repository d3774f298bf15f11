"""A real ``tinygpt serve`` process shared by a module's tests, and the same model in this process to compare."""

from __future__ import annotations

import pytest

from tinygpt import Model

from serving import running_server


@pytest.fixture(scope="session")
def served_log(tmp_path_factory):
    return tmp_path_factory.mktemp("server") / "server.log"


@pytest.fixture(scope="session")
def server(small_gpt2_dir, served_log):
    """Base URL of a float32 server of the small GPT-2-vocabulary model, batch 16."""
    with running_server(small_gpt2_dir, "--max-batch", "16", log=served_log) as url:
        yield url


@pytest.fixture(scope="session")
def distilgpt2_shape_gpt2_tokenizer_dir(tmp_path_factory, distilgpt2_shape_dir, gpt2_tokenizer_dir):
    """distilgpt2's shape with GPT-2's tokenizer: a served model slow enough (tens of tokens a second) that a
    test can act while a request is still generating."""
    directory = tmp_path_factory.mktemp("distilgpt2_shape_gpt2_tokenizer")
    for source in (distilgpt2_shape_dir / "config.json", distilgpt2_shape_dir / "model.safetensors",
                   gpt2_tokenizer_dir / "vocab.json", gpt2_tokenizer_dir / "merges.txt"):
        (directory / source.name).symlink_to(source)
    return directory


@pytest.fixture(scope="session")
def model_id(small_gpt2_dir) -> str:
    return str(small_gpt2_dir)


@pytest.fixture(scope="session")
def local_model(small_gpt2_dir) -> Model:
    """The served model, loaded here: what a request must equal when run alone."""
    return Model.from_pretrained(small_gpt2_dir)
