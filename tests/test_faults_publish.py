"""Publication under faults (issue 15, faults 3, 4 and 6): races, kills, planted links.

Several processes commit to one output folder at once while this process reads
it; a process is killed right after its run folder is renamed into place, or
while it writes; symlinks planted in the output folder must not send anything
outside it; an unwritable folder is reported before any work.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline import outputs
from pipeline.outputs import (
    LATEST,
    MANIFEST,
    OWNER,
    REPORT,
    OutputPathError,
    PublishError,
    check_output_folder,
    commit_run,
    latest_run,
    new_run_id,
    publish,
    stage_run,
)

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 25, 19, 56, 6, tzinfo=UTC)


def _stage(root: Path, moment: datetime, token: str):
    run_id = new_run_id(moment, token)
    staged = stage_run(root, run_id, moment)
    staged.write_text(REPORT, f"<p>{run_id}</p>\n")
    staged.write_text("quarantine.csv", f"_row,reason\n1,{run_id}\n")
    staged.write_text("tables/t.csv", f"run\n{run_id}\n")
    return staged


def _commit(root: Path, moment: datetime, token: str, **kwargs):
    return commit_run(_stage(root, moment, token), {"study": "s"}, **kwargs)


def _top_level_run(root: Path) -> tuple[str, str, str]:
    report = (root / REPORT).read_text().strip().removeprefix("<p>").removesuffix("</p>")
    manifest = json.loads((root / MANIFEST).read_text())["run_id"]
    table = (root / "tables" / "t.csv").read_text().split()[1]
    return report, manifest, table


def _leftovers(root: Path) -> list[str]:
    hidden = [p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".growth.lock"]
    hidden += [p.name for p in (root / "runs").iterdir() if p.name.startswith(".")]
    return sorted(hidden)


# ------------------------------------------------------------------ races


def _committer(root: str, worker: int, rounds: int, barrier) -> list[str]:
    barrier.wait()
    made = []
    for index in range(rounds):
        run_id = f"{worker:02x}{index:02x}{os.urandom(2).hex()}"
        committed = _commit(Path(root), datetime.now(UTC), run_id)
        made.append(committed.run_id)
    return made


def _worker(root: str, worker: int, rounds: int, barrier, queue) -> None:
    try:
        queue.put((worker, _committer(root, worker, rounds, barrier), None))
    except BaseException as error:  # reported to the test
        queue.put((worker, [], f"{type(error).__name__}: {error}"))


def test_concurrent_commits_keep_the_top_level_consistent_with_latest(tmp_path):
    root = tmp_path / "out"
    _commit(root, T0, "00000000")
    workers, rounds = 4, 6
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    queue = context.Queue()
    processes = [
        context.Process(target=_worker, args=(str(root), worker, rounds, barrier, queue))
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    samples = inconsistent = 0
    seen: list[str] = []
    try:
        while any(process.is_alive() for process in processes):
            before = os.readlink(root / LATEST)
            try:
                observed = _top_level_run(root)
            except (OSError, IndexError, ValueError) as error:
                pytest.fail(f"a reader saw a broken top level: {error}")
            after = os.readlink(root / LATEST)
            if before == after:  # latest did not move while we read: all must agree
                samples += 1
                run_id = before.split("/")[1]
                if set(observed) != {run_id}:
                    inconsistent += 1
                if not seen or seen[-1] != run_id:
                    seen.append(run_id)
        results = [queue.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    errors = [error for _, _, error in results if error]
    assert errors == []
    assert samples > 0 and inconsistent == 0
    made = sorted(run_id for _, ids, _ in results for run_id in ids)
    assert len(made) == workers * rounds
    manifests = {
        folder.name: json.loads((folder / MANIFEST).read_text())
        for folder in (root / "runs").iterdir()
        if not folder.name.startswith(".")
    }
    assert {m["status"] for m in manifests.values()} == {"succeeded"}
    newest = max(manifests, key=lambda name: (name[:16], manifests[name]["started"], name))
    assert latest_run(root) == root / "runs" / newest
    assert set(_top_level_run(root)) == {newest}
    order = [(name[:16], manifests[name]["started"], name) for name in seen if name in manifests]
    assert order == sorted(order), "latest moved back to an older run"
    assert _leftovers(root) == []


def test_latest_stays_on_the_newest_run_when_an_older_one_finishes_last(tmp_path):
    root = tmp_path / "out"
    newer = _commit(root, T0 + timedelta(seconds=5), "bbbb2222")
    older = _commit(root, T0, "aaaa1111")
    assert newer.published and not older.published
    assert older.folder.is_dir()
    assert latest_run(root) == newer.folder
    assert set(_top_level_run(root)) == {newer.run_id}


# ------------------------------------------------------------------ kills

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import UTC, datetime
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import test_faults_publish as t
    root, moment, token, when = Path(sys.argv[1]), datetime.fromisoformat(sys.argv[2]), sys.argv[3], sys.argv[4]
    real_rename = os.rename
    def rename(source, target, *args, **kwargs):
        real_rename(source, target, *args, **kwargs)
        if when == "after-rename" and Path(target).parent.name == "runs":
            os.kill(os.getpid(), signal.SIGKILL)
    os.rename = rename
    staged = t._stage(root, moment, token)
    if when == "while-writing":
        os.kill(os.getpid(), signal.SIGKILL)
    t.commit_run(staged, {{"study": "s"}})
    """
).format(tests=str(Path(__file__).parent))


def _killed_child(root: Path, moment: datetime, token: str, when: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(root), moment.isoformat(), token, when],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, err.decode()


def test_a_kill_right_after_the_rename_leaves_a_consistent_folder(tmp_path):
    root = tmp_path / "out"
    good = _commit(root, T0, "aaaa1111")
    _killed_child(root, T0 + timedelta(seconds=1), "bbbb2222", "after-rename")
    killed = root / "runs" / new_run_id(T0 + timedelta(seconds=1), "bbbb2222")
    assert json.loads((killed / MANIFEST).read_text())["status"] == "succeeded"
    # the killed run never got published: latest and the top level agree on the old run
    assert latest_run(root) == good.folder
    assert set(_top_level_run(root)) == {good.run_id}
    assert _leftovers(root) == []
    # the next publication (here a failed run's commit) repairs it: the newest success wins
    staged = stage_run(root, new_run_id(T0 + timedelta(seconds=2), "cccc3333"), T0)
    staged.write_text("failure.md", "# failed\n")
    commit_run(staged, {}, status="failed")
    assert latest_run(root) == killed
    assert set(_top_level_run(root)) == {killed.name}


def test_a_dead_runs_partial_folder_is_removed_a_live_ones_kept(tmp_path):
    root = tmp_path / "out"
    _killed_child(root, T0, "dddd4444", "while-writing")
    dead = root / "runs" / f".{new_run_id(T0, 'dddd4444')}.partial"
    assert dead.is_dir() and json.loads((dead / OWNER).read_text())["pid"] > 0
    live = stage_run(root, new_run_id(T0, "eeee5555"), T0)  # owned by this process
    elsewhere = stage_run(root, new_run_id(T0, "ffff6666"), T0)
    record = json.loads((elsewhere.staging / OWNER).read_text())
    (elsewhere.staging / OWNER).write_text(json.dumps({**record, "host": "other-host"}))
    (root / ".mirror-20261125T195606Z-aaaa1111").mkdir()  # an earlier version's leftover
    _commit(root, T0 + timedelta(seconds=1), "abab1212")
    assert not dead.exists()
    assert live.staging.is_dir() and elsewhere.staging.is_dir()
    assert not (root / ".mirror-20261125T195606Z-aaaa1111").exists()
    assert socket.gethostname() == record["host"]


def test_an_exception_after_the_rename_says_the_run_is_complete(tmp_path, monkeypatch):
    root = tmp_path / "out"
    good = _commit(root, T0, "aaaa1111")
    staged = _stage(root, T0 + timedelta(seconds=1), "bbbb2222")

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "_point_latest", broken)
    with pytest.raises(PublishError, match="the run is complete .succeeded. but could not be"):
        commit_run(staged, {})
    assert json.loads((staged.final / MANIFEST).read_text())["status"] == "succeeded"
    assert latest_run(root) == good.folder
    monkeypatch.undo()
    assert publish(root) == staged.run_id


# ------------------------------------------------------------------ keep_runs


def test_keep_runs_prunes_old_runs_but_never_latest(tmp_path):
    root = tmp_path / "out"
    newest = _commit(root, T0 + timedelta(seconds=10), "aaaa1111")
    for second in range(1, 5):  # older runs, committed after the newest
        _commit(root, T0 + timedelta(seconds=second), f"bbbb000{second}")
    staged = stage_run(root, new_run_id(T0 + timedelta(seconds=20), "cccc3333"), T0)
    staged.write_text("failure.md", "# failed\n")
    commit_run(staged, {}, status="failed", keep_runs=2)
    names = sorted(p.name for p in (root / "runs").iterdir() if not p.name.startswith("."))
    assert names == [newest.run_id, new_run_id(T0 + timedelta(seconds=20), "cccc3333")]
    assert latest_run(root) == newest.folder
    commit_run(_stage(root, T0 + timedelta(seconds=30), "dddd4444"), {}, keep_runs=1)
    names = [p.name for p in (root / "runs").iterdir() if not p.name.startswith(".")]
    assert names == [new_run_id(T0 + timedelta(seconds=30), "dddd4444")]


def test_keep_runs_is_a_config_key(tmp_path):
    from pipeline.config import load_config
    from tests.conftest import EXAMPLE_CONFIG

    text = EXAMPLE_CONFIG.read_text().replace("[output]\n", "[output]\nkeep_runs = 3\n")
    path = tmp_path / "s.toml"
    path.write_text(text)
    assert load_config(path).output.keep_runs == 3
    path.write_text(text.replace("keep_runs = 3", "keep_runs = 0"))
    with pytest.raises(Exception, match="keep_runs"):
        load_config(path)


# ------------------------------------------------------------------ planted links, unwritable


@pytest.mark.parametrize("name", ["runs", "latest", "tables", "report.html"])
def test_a_planted_symlink_leading_outside_is_refused(tmp_path, name):
    root = tmp_path / "out"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / name).symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputPathError) as caught:
        _commit(root, T0, "aaaa1111")
    message = str(caught.value)
    assert "\n" not in message
    assert f"{root / name}: is a symbolic link to {str(outside)!r}" in message
    assert "remove it" in message
    assert list(outside.iterdir()) == []


def test_a_planted_latest_is_refused_before_any_work(tmp_path):
    root = tmp_path / "out"
    _commit(root, T0, "aaaa1111")
    (root / LATEST).unlink()
    (root / LATEST).symlink_to("/etc")
    with pytest.raises(OutputPathError, match="latest: is a symbolic link to '/etc'"):
        check_output_folder(root)
    assert latest_run(root) is None


def test_a_file_in_the_way_is_reported_before_any_work(tmp_path):
    blocked = tmp_path / "out"
    blocked.write_text("x")
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        check_output_folder(blocked)
    root = tmp_path / "out2"
    root.mkdir()
    (root / "runs").write_text("x")
    with pytest.raises(OutputPathError, match="runs: exists and is not a folder"):
        check_output_folder(root)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write a read-only folder"
)
def test_a_read_only_output_folder_is_reported(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    root.chmod(0o555)
    try:
        with pytest.raises(OutputPathError, match="the output folder cannot be written"):
            check_output_folder(root)
    finally:
        root.chmod(0o755)


def test_an_unwritable_output_folder_is_one_line(tmp_path, monkeypatch):
    root = tmp_path / "out"

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(root / "runs"))

    monkeypatch.setattr(outputs.tempfile, "mkstemp", read_only)
    with pytest.raises(OutputPathError) as caught:
        check_output_folder(root)
    assert str(caught.value) == (
        f"{root / 'runs'}: the output folder cannot be written (Read-only file system); "
        "choose another with --output or [output] dir"
    )


def test_an_older_versions_top_level_copy_becomes_links(tmp_path):
    root = tmp_path / "out"
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "old.csv").write_text("x\n")
    (root / REPORT).write_text("<p>old</p>")
    (root / MANIFEST).write_text("{}")
    run = _commit(root, T0, "aaaa1111")
    for name in (REPORT, MANIFEST, "tables", "charts", "quarantine.csv"):
        assert os.readlink(root / name) == f"latest/{name}"
    assert set(_top_level_run(root)) == {run.run_id}
    assert _leftovers(root) == []


def test_owner_records_tell_a_reused_pid():
    me = outputs._owner_record()
    assert not outputs._owner_gone(me)
    assert not outputs._owner_gone({**me, "host": "elsewhere"})
    if me["process_start"] is not None:
        assert outputs._owner_gone({**me, "process_start": "1"})
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert outputs._owner_gone({"pid": child.pid, "host": me["host"], "process_start": None})
