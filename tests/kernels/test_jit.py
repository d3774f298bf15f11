"""How kernels are compiled: without a writable cache, in memory with one warning; with one, a second process
loads them from disk."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tinygpt
import tinygpt.kernels


def package_copy(directory: Path) -> Path:
    """A copy of the tinygpt package, kernels included, without compiled caches, in ``directory``."""
    package = directory / "tinygpt"
    no_pycache = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(tinygpt.__file__).parent, package, ignore=no_pycache)
    shutil.rmtree(package / "kernels", ignore_errors=True)  # an editable install maps kernels/ from elsewhere
    shutil.copytree(Path(tinygpt.kernels.__file__).parent, package / "kernels", ignore=no_pycache)
    return package


def run_twice(code: str, directory: Path) -> list[subprocess.CompletedProcess]:
    """``code`` run in two fresh processes one after the other, importing the package copy in ``directory``
    (the first one fills its kernel cache, the second loads from it); both must succeed."""
    env = {**os.environ, "PYTHONPATH": str(directory)}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, cwd=directory, capture_output=True, text=True,
                           timeout=600, check=False) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr
    return runs


def test_kernels_work_when_no_cache_directory_is_writable(tmp_path):
    """A copy of the package where every place Numba may cache in is unusable, even for root: the in-tree
    __pycache__ is a file, and NUMBA_CACHE_DIR and the home directory lie under a file."""
    package = package_copy(tmp_path)
    (package / "kernels" / "__pycache__").write_text("")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "HOME": str(blocker), "XDG_CACHE_HOME": str(blocker / "c"),
           "NUMBA_CACHE_DIR": str(blocker / "numba")}
    code = ("import numpy as np; from tinygpt.kernels import layer_norm, norm; print(norm.__file__); "
            "print(str(layer_norm(np.array([[1.0, 3.0]], np.float32), np.ones(2, np.float32), "
            "np.zeros(2, np.float32), 0.0).tolist()).replace(' ', ''))")
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    module_file, output = result.stdout.split()
    assert Path(module_file).parent == package / "kernels"  # the copy ran, not the installed package
    assert output == "[[-1.0,1.0]]"
    assert result.stderr.count("kernels will be compiled on every run") == 1
    assert not any((package / "kernels").glob("*.nbi"))


def test_gemms_load_from_the_disk_cache(tmp_path):
    """tiles.panel_gemm's and gemm.broadcast_gemm's kernels are closures over their packing step. Numba keys a closure's cache entry by
    a hash of what it holds, so a step that pickles differently in every process (a jit dispatcher rather than
    a jit_step function) would have them compiled again on every run: a second process must load both."""
    package_copy(tmp_path)
    code = ("import numpy as np; from tinygpt.kernels import matmul\n"
            "x = np.ones((4, 800), np.float32); w = np.ones((800, 3), np.float32); b = np.ones(3, np.float32)\n"
            "matmul._linear_gemm(x, w, b, np.empty((4, 3), np.float32), False, False)\n"
            "matmul._gemm_nt(matmul.split_k(x), 800, w.T.copy(), None, np.empty((4, 3), np.float32), False, False)\n"
            "kernels = (matmul._linear_gemm, matmul._gemm_nt)\n"
            "print([sum(k.stats.cache_hits.values()) for k in kernels])\n")
    runs = run_twice(code, tmp_path)
    assert runs[0].stdout.split() == ["[0,", "0]"]  # the copy started without a cache
    assert runs[1].stdout.split() == ["[1,", "1]"]


def test_kernels_load_from_the_cache_without_numbas_registries(tmp_path):
    """A kernel loaded from the disk cache is machine code already: loading it must not set up what Numba
    needs to compile (its typing and lowering registries, among them numba.typed's, which only that set-up
    imports), and a function compiled afterwards must still work."""
    package_copy(tmp_path)
    code = ("import sys; import numpy as np; from tinygpt.kernels import layer_norm, norm\n"
            "x = np.array([[1.0, 3.0]], np.float32)\n"
            "y = layer_norm(x, np.ones(2, np.float32), np.zeros(2, np.float32), 0.0)\n"
            "print(sum(norm._layer_norm_rows.stats.cache_hits.values()), 'numba.typed.typeddict' in sys.modules)\n"
            "import numba\n"
            "print(numba.njit(lambda a: (a * a).sum())(y), str(y.tolist()).replace(' ', ''))\n")
    runs = run_twice(code, tmp_path)
    assert runs[0].stdout.split() == ["0", "True", "2.0", "[[-1.0,1.0]]"]  # compiled: the registries were set up
    assert runs[1].stdout.split() == ["1", "False", "2.0", "[[-1.0,1.0]]"]  # loaded: they were not
