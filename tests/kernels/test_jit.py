"""Kernels without a writable compile cache: compiled in memory, with one warning."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tinygpt
import tinygpt.kernels


def test_kernels_work_when_no_cache_directory_is_writable(tmp_path):
    """A copy of the package where every place Numba may cache in is unusable, even for root: the in-tree
    __pycache__ is a file, and NUMBA_CACHE_DIR and the home directory lie under a file."""
    package = tmp_path / "tinygpt"
    no_pycache = shutil.ignore_patterns("__pycache__")
    shutil.copytree(Path(tinygpt.__file__).parent, package, ignore=no_pycache)
    shutil.rmtree(package / "kernels", ignore_errors=True)  # an editable install maps kernels/ from elsewhere
    shutil.copytree(Path(tinygpt.kernels.__file__).parent, package / "kernels", ignore=no_pycache)
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
