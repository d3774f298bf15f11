"""A loopback stand-in for the Hugging Face Hub, speaking the endpoints `huggingface_hub.snapshot_download` uses.

Served (repo ids may contain one "/"; revisions are branch names or commit hashes, URL-quoted by the client):
  GET       /api/models/{repo}                     model info of the default branch ("main"): id, sha, siblings
  GET       /api/models/{repo}/revision/{rev}      model info at a revision
  GET       /api/models/{repo}/tree/{rev}          file listing (path, size, oid, lfs), always recursive
  HEAD/GET  /{repo}/resolve/{rev}/{path}           file bytes with ETag, X-Repo-Commit, Content-Length
Errors carry the X-Error-Code header (RepoNotFound, RevisionNotFound, EntryNotFound) the client maps to exceptions.
Every request is recorded as (method, unquoted path) in `FakeHub.requests`.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

# Files the real hub keeps in Git LFS (large binaries): their ETag is the content's sha256, not the git blob id.
_LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".ot", ".onnx", ".tflite", ".mlmodel")

_ROUTES = (
    ("info", re.compile(r"/api/models/(?P<repo>.+?)/revision/(?P<rev>[^/]+)")),
    ("tree", re.compile(r"/api/models/(?P<repo>.+?)/tree/(?P<rev>[^/]+)(?:/.*)?")),
    ("info", re.compile(r"/api/models/(?P<repo>[^/]+(?:/[^/]+)?)")),
    ("file", re.compile(r"/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")),
)


@dataclass
class _Repo:
    """Commits (hash -> {path: bytes}) and branches (name -> commit hash) of one model repo."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


def _git_blob_id(data: bytes) -> str:
    """Git's object id for a blob: sha1 over a 'blob <size>\\0' header plus the content."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(_LFS_SUFFIXES)


def _lfs_pointer(data: bytes) -> bytes:
    """The small text file git stores in place of an LFS object."""
    digest = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{digest}\nsize {len(data)}\n".encode()


def _etag(path: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if _is_lfs(path) else _git_blob_id(data)


def _tree_entry(path: str, data: bytes) -> dict:
    """One file of the /tree listing, with the fields `huggingface_hub.hf_api.RepoFile` reads."""
    if not _is_lfs(path):
        return {"type": "file", "path": path, "size": len(data), "oid": _git_blob_id(data)}
    pointer = _lfs_pointer(data)
    return {
        "type": "file",
        "path": path,
        "size": len(data),
        "oid": _git_blob_id(pointer),
        "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)},
    }


def _folders(paths: list[str]) -> list[str]:
    """Every folder that contains one of `paths`, parents first."""
    return sorted({path.rsplit("/", i)[0] for path in paths for i in range(1, path.count("/") + 1)})


class FakeHub:
    """A threaded HTTP server on 127.0.0.1 (random free port) serving in-memory model repos.

    Use as a context manager or call start()/stop(); `endpoint` is the value for HF_ENDPOINT.
    """

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Publish `files` as a new commit of `repo_id`, pointed to by `branch`; return its 40-hex commit hash."""
        digest = hashlib.sha1(repo_id.encode() + branch.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\x00" + files[path])
        commit = digest.hexdigest()
        repo = self._repos.setdefault(repo_id, _Repo())
        repo.commits[commit] = dict(files)
        repo.branches[branch] = commit
        return commit

    def commit_of(self, repo_id: str, branch: str) -> str:
        """The commit hash `branch` of `repo_id` points to."""
        return self._repos[repo_id].branches[branch]

    def requested_paths(self) -> list[str]:
        """The unquoted URL paths of all requests received so far."""
        with self._lock:
            return [path for _, path in self.requests]

    def start(self) -> FakeHub:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port, so later connections are refused."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _lookup(self, repo_id: str, revision: str) -> tuple[str | None, dict[str, bytes] | None, str | None]:
        """(commit hash, files, error code) for a repo at a branch name or commit hash."""
        repo = self._repos.get(repo_id)
        if repo is None:
            return None, None, "RepoNotFound"
        commit = repo.branches.get(revision, revision)
        if commit not in repo.commits:
            return None, None, "RevisionNotFound"
        return commit, repo.commits[commit], None


def _handler_class(hub: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler class bound to `hub` (BaseHTTPRequestHandler is instantiated per request)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._dispatch(send_body=True)

        def do_HEAD(self) -> None:
            self._dispatch(send_body=False)

        def log_message(self, format: str, *args) -> None:  # keep test output quiet
            pass

        def _dispatch(self, send_body: bool) -> None:
            path = urlsplit(self.path).path
            hub._record(self.command, unquote(path))
            for kind, pattern in _ROUTES:
                match = pattern.fullmatch(path)
                if match is None:
                    continue
                repo_id = unquote(match["repo"])
                revision = unquote(match["rev"]) if "rev" in pattern.groupindex else "main"
                commit, files, error = hub._lookup(repo_id, revision)
                if error is not None:
                    return self._send_error(error, commit)
                if kind == "info":
                    return self._send_json(_model_info(repo_id, commit, files), send_body)
                if kind == "tree":
                    return self._send_json(_tree(files), send_body)
                return self._send_file(unquote(match["path"]), commit, files, send_body)
            self._send_error("NotFound", None)

        def _send_json(self, payload, send_body: bool) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _send_file(self, path: str, commit: str, files: dict[str, bytes], send_body: bool) -> None:
            if path not in files:
                return self._send_error("EntryNotFound", commit)
            data = files[path]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{_etag(path, data)}"')
            self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if send_body:
                self.wfile.write(data)

        def _send_error(self, code: str, commit: str | None) -> None:
            body = json.dumps({"error": code}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Error-Code", code)
            if commit is not None:
                self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def _model_info(repo_id: str, commit: str, files: dict[str, bytes]) -> dict:
    return {"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": [{"rfilename": p} for p in sorted(files)]}


def _tree(files: dict[str, bytes]) -> list[dict]:
    folders = [{"type": "directory", "path": folder, "size": 0, "oid": hashlib.sha1(folder.encode()).hexdigest()}
               for folder in _folders(list(files))]
    return folders + [_tree_entry(path, files[path]) for path in sorted(files)]
