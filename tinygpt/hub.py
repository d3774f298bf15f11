"""Find a model directory: a local folder as is, or a hub repo downloaded into the Hugging Face cache.

Downloads go through `huggingface_hub.snapshot_download`, so the standard cache layout, progress bars and the
HF_HOME / HF_HUB_CACHE / HF_ENDPOINT / HF_HUB_OFFLINE environment variables all behave as in other HF tools.
Only the files tinygpt reads are fetched: GPT-2 repos also hold large TF/Flax/Rust/CoreML/TFLite/ONNX copies.
"""

from __future__ import annotations

import os
import pathlib

from .errors import HubError, InputError, MissingFileError
from .tokenizers.files import TOKENIZER_FILES

# Repo-root file name patterns (fnmatch, as `snapshot_download(allow_patterns=...)` uses them).
NEEDED_FILES: tuple[str, ...] = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-?????-of-?????.safetensors",  # shards, named as transformers writes them
    *TOKENIZER_FILES,
)

# Weight formats tinygpt does not read; named in the error when a repo only has these.
_OTHER_WEIGHT_SUFFIXES = (".bin", ".h5", ".msgpack", ".ckpt", ".pt", ".pth")


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None) -> pathlib.Path:
    """Return the directory holding a model's config.json, weights and tokenizer files.

    name_or_path: an existing local directory (returned as is), or a hub repo id such as "distilgpt2" or
    "uer/gpt2-distil-chinese-cluecorpussmall", whose needed files (NEEDED_FILES) are downloaded into the
    Hugging Face cache, or taken from it when offline. revision: branch, tag or commit hash (hub repos only).
    Returns the local directory (for a repo, its cached snapshot directory).
    Raises InputError for arguments of the wrong kind (and a revision given with a local path),
    MissingFileError (a FileNotFoundError) for a bad local path, HubError (an OSError) for hub problems.
    """
    location = os.fspath(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else None
    if not isinstance(location, str):  # pathlib would raise a TypeError of its own about bytes or an int
        raise InputError("name_or_path must be a hub repo id such as 'distilgpt2' or a local model directory "
                         f"(a str or os.PathLike), got {type(name_or_path).__name__}")
    if location == "":  # pathlib reads "" as ".", the current directory
        raise InputError("name_or_path is empty: give a hub repo id such as 'distilgpt2' or a local model directory")
    if revision is not None and not isinstance(revision, str):
        raise InputError(f"revision must be a branch, tag or commit hash (a str) or None, got "
                         f"{type(revision).__name__}")
    path = pathlib.Path(name_or_path).expanduser()
    if path.exists() or not isinstance(name_or_path, str):
        return _checked_local_dir(path, revision)
    return _download_snapshot(name_or_path, revision)


def _checked_local_dir(path: pathlib.Path, revision: str | None) -> pathlib.Path:
    """Validate a local model directory: it must exist and hold config.json."""
    if revision is not None:
        raise InputError(f"revision={revision!r} only applies to hub repo ids, but {str(path)!r} is a local path.")
    if not path.exists():
        raise MissingFileError(f"Model directory {str(path)!r} does not exist.")
    if not path.is_dir():
        raise MissingFileError(f"{str(path)!r} is a file; pass the directory that holds config.json.")
    if not (path / "config.json").is_file():
        raise MissingFileError(
            f"{str(path)!r} has no config.json; pass the directory a model was saved to (config.json + .safetensors)."
        )
    return path


def _download_snapshot(repo_id: str, revision: str | None) -> pathlib.Path:
    """Download (or find in the cache) the needed files of a hub repo; return its snapshot directory."""
    # Imported here, not at the top: a local directory needs none of it (~0.15 s and a few MB to import).
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    described = _describe(repo_id, revision)
    try:
        snapshot = huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=list(NEEDED_FILES))
    except HFValidationError as error:
        raise MissingFileError(
            f"{repo_id!r} is neither an existing directory nor a valid hub repo id ('name' or 'namespace/name')."
        ) from error
    except RevisionNotFoundError as error:
        missing = revision or constants.DEFAULT_REVISION
        raise HubError(f"Model repo {repo_id!r} has no revision {missing!r} on {constants.ENDPOINT}.") from error
    except RepositoryNotFoundError as error:  # also covers gated repos
        raise HubError(
            f"No model repo {repo_id!r} on {constants.ENDPOINT} (and no local directory of that name): check the"
            " name, or log in with `hf auth login` if the repo is private or gated."
        ) from error
    except LocalEntryNotFoundError as error:  # hub unreachable or offline, and not (fully) cached
        raise HubError(_not_cached_message(described)) from error
    snapshot_dir = pathlib.Path(snapshot)
    _require_loadable_snapshot(snapshot_dir, repo_id, revision)
    return snapshot_dir


def _not_cached_message(described: str) -> str:
    """One sentence saying why a repo could not be provided from the cache, and how to fix it."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return (
            f"{described} is not (fully) in the Hugging Face cache {constants.HF_HUB_CACHE} and HF_HUB_OFFLINE is set:"
            " connect once with HF_HUB_OFFLINE unset to download it, or pass a local model directory."
        )
    return (
        f"{described} is not (fully) in the Hugging Face cache {constants.HF_HUB_CACHE} and the hub at"
        f" {constants.ENDPOINT} could not be reached: check your network or HF_ENDPOINT, or pass a local model"
        " directory."
    )


def _require_loadable_snapshot(snapshot_dir: pathlib.Path, repo_id: str, revision: str | None) -> None:
    """Raise HubError if the downloaded snapshot lacks config.json or safetensors weights."""
    described = _describe(repo_id, revision)
    if not (snapshot_dir / "config.json").is_file():
        raise HubError(f"{described} has no config.json, so it is not a checkpoint tinygpt can load.")
    if not any(snapshot_dir.glob("*.safetensors")):
        others = _other_weight_files(repo_id, revision)
        found = f"only {', '.join(others)}" if others else "no weight files tinygpt recognises"
        raise HubError(
            f"{described} has no .safetensors weights ({found}) and tinygpt only reads safetensors: convert once"
            " with transformers (`AutoModelForCausalLM.from_pretrained(repo).save_pretrained(out_dir)`, which"
            " writes model.safetensors) and pass out_dir."
        )


def _other_weight_files(repo_id: str, revision: str | None) -> list[str]:
    """Repo-root weight files in formats tinygpt does not read, from the repo listing cached by the download."""
    import huggingface_hub
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        tree = huggingface_hub.get_cached_repo_tree(repo_id, revision=revision)
    except CachedRepoTreeNotFoundError:  # e.g. a snapshot cached by an older huggingface_hub
        return []
    return sorted(f.path for f in tree if "/" not in f.path and f.path.endswith(_OTHER_WEIGHT_SUFFIXES))


def _describe(repo_id: str, revision: str | None) -> str:
    """Human-readable name of a repo at a revision, for error messages."""
    return f"Model repo {repo_id!r}" + (f" at revision {revision!r}" if revision is not None else "")
