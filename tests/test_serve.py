"""``growth serve``: which studies are served and how; and a real server round trip."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE_CONFIG

from flows.serve import deployments, scheduled_studies
from pipeline.errors import ConfigError


def test_only_studies_with_a_schedule_are_served(make_study):
    scheduled = make_study(name="early.toml")
    text = scheduled.read_text(encoding="utf-8")
    unscheduled = text.split("[schedule]")[0].replace('name = "early"', 'name = "adhoc"', 1)
    (scheduled.parent / "adhoc.toml").write_text(unscheduled, encoding="utf-8")
    (scheduled.parent / "notes.txt").write_text("not a config")
    studies = scheduled_studies(scheduled.parent)
    assert [study.name for study in studies] == ["early"]
    assert studies[0].path == scheduled.resolve()


def test_a_broken_config_stops_serving(make_study):
    config = make_study(replace={'person = "id"': 'persn = "id"'})
    with pytest.raises(ConfigError, match="'persn' is not allowed"):
        scheduled_studies(config.parent)


def test_two_scheduled_configs_of_one_study_are_refused(make_study):
    config = make_study(name="a.toml")
    make_study(name="b.toml")
    with pytest.raises(ConfigError, match="'early' is also used by"):
        scheduled_studies(config.parent)


def test_no_folder_or_nothing_scheduled_is_an_error(tmp_path, capsys):
    from flows.cli import main

    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "no study config with a [schedule] table" in capsys.readouterr().err


def test_a_deployment_per_study_with_its_cron_and_time_zone(make_study):
    config = make_study(
        replace={'timezone = "UTC"': 'timezone = "Europe/Amsterdam"'}, name="early.toml"
    )
    (deployment,) = deployments(scheduled_studies(config.parent))
    assert deployment.name == "early"
    assert deployment.flow_name == "growth-study"
    assert deployment.parameters == {"config": str(config.resolve())}
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 6 * * 1"
    assert schedule.schedule.timezone == "Europe/Amsterdam"


def test_the_bundled_example_is_scheduled():
    (study,) = [s for s in scheduled_studies(EXAMPLE_CONFIG.parent) if s.name == "early"]
    assert study.config.schedule is not None


# --- a real server ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process we started and everything it started (its own process group)."""
    if process.poll() is not None:
        return
    for sent, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for(what: str, check, timeout: float, processes: list[subprocess.Popen[bytes]]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"{process.args[:3]} exited ({process.returncode})")
        try:
            value = check()
        except Exception:  # noqa: BLE001 - not ready yet
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.server
def test_serve_a_study_and_run_it_through_the_api(tmp_path, make_study):
    import httpx
    from prefect.client.orchestration import SyncPrefectClient

    config = make_study(name="early.toml")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    environ.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    bin_dir = Path(sys.executable).parent
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("server", "serve")}
    started: list[subprocess.Popen[bytes]] = []
    try:
        server = subprocess.Popen(
            [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(port), "--no-ui"],
            cwd=tmp_path,
            env=environ,
            stdout=logs["server"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(server)
        _wait_for(
            "the server",
            lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200,
            180,
            started,
        )
        serving = subprocess.Popen(
            [str(bin_dir / "growth"), "serve", str(config.parent)],
            cwd=tmp_path,
            env=environ,
            stdout=logs["serve"],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(serving)
        with SyncPrefectClient(api) as client:
            deployment = _wait_for(
                "the deployment",
                lambda: client.read_deployment_by_name("growth-study/early"),
                180,
                started,
            )
            (schedule,) = deployment.schedules
            assert schedule.schedule.cron == "0 6 * * 1"
            assert schedule.schedule.timezone == "UTC"
            # what the UI's "Run" button does
            flow_run = client.create_flow_run_from_deployment(deployment.id)
            final = _wait_for(
                "the flow run",
                lambda: (
                    (state := client.read_flow_run(flow_run.id).state)
                    and state.is_final()
                    and state
                ),
                300,
                started,
            )
        serve_log = (tmp_path / "serve.log").read_text(errors="replace")
        assert final.is_completed(), f"{final!r}\n{serve_log}"
        out = tmp_path / "outputs" / "early"
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["prefect"]["flow_run_id"] == str(flow_run.id)
        assert manifest["rows_in"] == 309
        assert (out / "report.html").is_file()
        assert "[early] serve: growth-study/early on '0 6 * * 1' (UTC)" in serve_log
        assert "Traceback" not in serve_log
    finally:
        for process in reversed(started):
            _stop(process)
        for handle in logs.values():
            handle.close()
    assert all(process.poll() is not None for process in started)
