"""Audit finding 3: cached fits (pickles) live in a private per-user folder, never in the output.

A pickle planted in a folder others can write would run code on the next run, so
the cache folder must be owned by the user and writable by nobody else; otherwise
the run goes on without the cache.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from flows import cache
from flows.cache import CACHE_ENV, cache_root, study_cache_dir, unsafe_reason

posix_only = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX owner and mode bits")


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "_warned", set())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- where the cache is ----------------------------------------------------------------------


def test_the_env_var_chooses_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert study_cache_dir("early") == tmp_path / "mine" / "early"


def test_the_default_is_the_users_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "growthcurves"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "growthcurves"


@posix_only
def test_the_cache_folders_are_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "a" / "growthcurves"))
    old = os.umask(0o022)
    try:
        folder = study_cache_dir("early")
    finally:
        os.umask(old)
    assert folder == tmp_path / "a" / "growthcurves" / "early"
    assert _mode(folder) == 0o700
    assert _mode(folder.parent) == 0o700


def test_a_study_name_that_is_not_a_folder_name_gets_no_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert study_cache_dir("../x") is None
    assert "not a folder name" in capsys.readouterr().err


# --- unsafe folders are not used ------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o1777])
@pytest.mark.parametrize("which", ["root", "study"])
def test_a_folder_others_can_write_is_not_used(tmp_path, monkeypatch, capsys, mode, which):
    root = tmp_path / "shared"
    monkeypatch.setenv(CACHE_ENV, str(root))
    (root / "early").mkdir(parents=True)
    (root / "early" if which == "study" else root).chmod(mode)
    assert study_cache_dir("early") is None
    err = capsys.readouterr().err
    assert err.startswith("warning: cache folder ") and err.count("\n") == 1, err
    assert "can be written by other users" in err and "without cached fits" in err


@posix_only
def test_a_folder_of_another_user_is_not_used(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "theirs"))
    uid = os.geteuid()
    monkeypatch.setattr(cache.os, "geteuid", lambda: uid + 1)
    assert study_cache_dir("early") is None
    assert "owned by another user" in capsys.readouterr().err


def test_a_file_in_place_of_the_folder_is_not_used(tmp_path, monkeypatch, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "early").write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert study_cache_dir("early") is None
    assert "early" in capsys.readouterr().err


@posix_only
def test_the_warning_is_given_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "shared"))
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared").chmod(0o777)
    assert study_cache_dir("early") is None
    assert study_cache_dir("early") is None
    assert capsys.readouterr().err.count("warning: ") == 1


@posix_only
def test_a_private_folder_is_accepted(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir(mode=0o700)
    assert unsafe_reason(folder) is None
    folder.chmod(0o755)  # readable by others is not a way to plant a pickle
    assert unsafe_reason(folder) is None


# --- the flow --------------------------------------------------------------------------------


@posix_only
@pytest.mark.usefixtures("prefect_harness")
def test_the_flow_ignores_an_unsafe_cache_and_a_cache_in_the_output_folder(
    make_study, tmp_path, monkeypatch, capfd
):
    """Fits cached by a first run, copied where others could have planted them, are not read."""
    from flows.study import growth_study

    config = make_study()
    out = tmp_path / "outputs" / "early"
    private = tmp_path / "private"
    monkeypatch.setenv(CACHE_ENV, str(private))
    first = growth_study(config=str(config), output=str(out))
    assert first["reused_cached_fits"] is False
    cached = sorted(path.name for path in (private / "early").iterdir())
    assert cached, "the first run cached its fits"
    assert not (out / ".cache").exists()

    # the same entries in a world-writable folder and in the old place inside the output
    shared = tmp_path / "shared"
    shutil.copytree(private, shared)
    shutil.copytree(private / "early", out / ".cache")
    for folder in (shared, shared / "early"):
        folder.chmod(0o777)
    monkeypatch.setenv(CACHE_ENV, str(shared))
    capfd.readouterr()
    second = growth_study(config=str(config), output=str(out))
    assert second["reused_cached_fits"] is False
    assert sorted(path.name for path in (shared / "early").iterdir()) == cached
    err = capfd.readouterr().err
    assert "warning: cache folder" in err and "can be written by other users" in err

    # back in the private folder the cache still works
    monkeypatch.setenv(CACHE_ENV, str(private))
    third = growth_study(config=str(config), output=str(out))
    assert third["reused_cached_fits"] is True
