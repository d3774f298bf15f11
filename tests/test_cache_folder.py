"""Where tinygpt's cache folder is, and how a file is written there: whole or not at all."""

import pytest

from tinygpt import cache_folder


@pytest.mark.parametrize("env, expected", [
    ({"TINYGPT_CACHE": "/c/tg", "XDG_CACHE_HOME": "/x", "HOME": "/h"}, "/c/tg"),
    ({"XDG_CACHE_HOME": "/x", "HOME": "/h"}, "/x/tinygpt"),
    ({"XDG_CACHE_HOME": "relative/ignored", "HOME": "/h"}, "/h/.cache/tinygpt"),
    ({"HOME": "/h"}, "/h/.cache/tinygpt"),
    ({"TINYGPT_CACHE": "~/tg", "HOME": "/h"}, "/h/tg"),
])
def test_the_cache_folder(monkeypatch, env, expected):
    for name in ("TINYGPT_CACHE", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert str(cache_folder.folder()) == expected


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def fail(temporary):
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cache_folder.atomic_write(tmp_path / "c" / "file", fail)
    assert list((tmp_path / "c").iterdir()) == []


def test_a_written_file_appears_whole_under_its_name(tmp_path):
    cache_folder.atomic_write(tmp_path / "c" / "file", lambda temporary: temporary.write_bytes(b"whole"))
    assert [(p.name, p.read_bytes()) for p in (tmp_path / "c").iterdir()] == [("file", b"whole")]
