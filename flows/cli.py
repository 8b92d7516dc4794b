"""The command line: ``growth run | validate | init | serve``, ``growth --version``, ``growth --help``.

An error is one line on stderr (``error: ...``) and a non-zero exit: 2 for an
error the user can act on (a :class:`pipeline.errors.GrowthError`, or bad
arguments), 1 for anything else (a bug: run again with ``--debug`` for the
traceback). Prefect is imported only by the commands that need it, after the
quiet defaults of :mod:`flows.settings` are in place.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from flows.settings import apply_prefect_defaults

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 130
_MAX_REASONS = 10


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage problem as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        # escape line breaks without importing pipeline (slow) for a usage error
        message = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
        self.exit(EXIT_USER, f"error: {message} (see '{self.prog} --help')\n")


def _version() -> str:
    try:
        own = metadata.version("growthcurves")
    except metadata.PackageNotFoundError:
        own = "unknown"
    try:
        prefect = metadata.version("prefect")
    except metadata.PackageNotFoundError:
        prefect = "not installed"
    return f"growth {own} (prefect {prefect}, python {sys.version.split()[0]})"


def _names(text: str) -> list[str]:
    """``"trt, ses"`` -> ``["trt", "ses"]``; ``""`` -> ``[]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error and Prefect's own log lines",
    )
    parser = _Parser(
        prog="growth",
        description="Longitudinal growth-curve analysis: validate a study's data, fit the "
        "multilevel growth models, write an offline HTML report.",
        parents=[debug],
        epilog="Example: growth run config/early.toml",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        parents=[debug],
        help="run a study: validate, fit, report",
        description="Run the growth_study flow on a study config and print the report's path.",
    )
    run.add_argument(
        "config",
        metavar="CONFIG",
        nargs="+",
        help="study config (TOML), e.g. config/early.toml; several are run in parallel",
    )
    run.add_argument(
        "--output",
        metavar="DIR",
        help="output folder (default: [output] dir of the config); the report is "
        "DIR/report.html (with several configs: DIR/<study>/report.html)",
    )
    run.add_argument(
        "--outcome", metavar="COL", help="analyse this column instead of [data] outcome"
    )
    run.add_argument(
        "--intercept-predictors",
        metavar="COLS",
        type=_names,
        help="comma-separated predictors of status in the conditional model "
        "(instead of [models] intercept_predictors; '' for none)",
    )
    run.add_argument(
        "--slope-predictors",
        metavar="COLS",
        type=_names,
        help="comma-separated predictors of change (instead of [models] slope_predictors)",
    )
    run.add_argument(
        "--no-cache", action="store_true", help="refit the models even if nothing changed"
    )
    run.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="reduce the data by partitions on this Dask scheduler (tcp://host:8786), or "
        "'local' for a local cluster of [execution] workers processes",
    )
    run.set_defaults(handler=_run)

    validate = commands.add_parser(
        "validate",
        parents=[debug],
        help="validate a study's config and data only",
        description="Check the config and the data; print the row counts and the reasons "
        "rows would be quarantined. Exits non-zero when the study cannot run.",
    )
    validate.add_argument("config", metavar="CONFIG", help="study config (TOML)")
    validate.add_argument(
        "--strict", action="store_true", help="also exit non-zero when any row is quarantined"
    )
    validate.set_defaults(handler=_validate)

    init = commands.add_parser(
        "init",
        parents=[debug],
        help="write a commented starter config from a data file",
        description="Guess the person, time and outcome columns, the person-level covariates "
        "and their levels from a long-layout CSV or Parquet file, and write a commented study "
        "config (TOML). An existing file is never overwritten.",
    )
    init.add_argument("data", metavar="DATA", help="data file (CSV or Parquet, long layout)")
    init.add_argument(
        "--output",
        metavar="CONFIG",
        help="where to write the config (default: config/<data name>.toml when a config "
        "folder exists here, else <data name>.toml)",
    )
    init.set_defaults(handler=_init)

    serve = commands.add_parser(
        "serve",
        parents=[debug],
        help="serve every scheduled study as a Prefect deployment",
        description="Serve each study config in CONFIG_DIR that has a [schedule] as a "
        "deployment of growth_study on its cron schedule; runs can also be started from "
        "the Prefect UI. Uses PREFECT_API_URL when set, else a temporary local server.",
    )
    serve.add_argument(
        "config_dir",
        metavar="CONFIG_DIR",
        nargs="?",
        default="config",
        help="folder of study configs (default: config)",
    )
    serve.set_defaults(handler=_serve)
    return parser


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class _QuietFailures(logging.Filter):
    """Drop Prefect's console records of a run's failure (the CLI prints one line instead).

    Only the flow and task run loggers' error records are dropped, and only on the
    console: they still reach the Prefect API, so the UI shows the traceback.
    """

    LOGGERS = (
        "prefect.flow_runs",
        "prefect.task_runs",
        "prefect.flow_engine",
        "prefect.task_engine",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR or not record.name.startswith(self.LOGGERS)


def _quiet_failure_logs() -> Callable[[], None]:
    """Filter Prefect's console handlers; return a function that undoes it."""
    quiet = _QuietFailures()
    handlers = []
    for name in ("", "prefect", *_QuietFailures.LOGGERS):
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ != "APILogHandler" and handler not in handlers:
                handler.addFilter(quiet)
                handlers.append(handler)

    def undo() -> None:
        for handler in handlers:
            handler.removeFilter(quiet)

    return undo


def _run(args: argparse.Namespace) -> int:
    with _collector_paused():
        runs = _checked_runs(args)
        from flows.tempserver import api_url_configured, temporary_api_server

        if api_url_configured():  # else the imports overlap the temporary server's start
            _import_flows()
    with temporary_api_server(while_starting=_import_flows), _no_heartbeats_unless_configured():
        _import_flows()  # done by now: above, or while the temporary server started
        return _run_flows(args, runs)


def _checked_runs(args: argparse.Namespace) -> list:
    """The run parameters of each config; a bad config or output folder fails here, at once."""
    from flows.params import RunParameters, study_config

    runs = [
        RunParameters.parse(
            config=config,
            output=args.output,
            outcome=args.outcome,
            intercept_predictors=args.intercept_predictors,
            slope_predictors=args.slope_predictors,
            use_cache=not args.no_cache,
            dask=args.dask,
        )
        for config in args.config
    ]
    from pipeline.outputs import check_output_folder

    for params in runs:
        cfg = study_config(params)  # a bad config fails here, before Prefect starts
        # an unwritable output folder or a planted link: now, before the server starts
        if params.output is None:
            root = cfg.output_dir
        elif len(runs) > 1:
            root = params.output.expanduser() / cfg.study.name
        else:
            root = params.output.expanduser()
        check_output_folder(root)
    return runs


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the block runs (imports, in practice).

    Importing Prefect, the pipeline and their libraries makes about half a
    million objects and next to no garbage; the collector, which runs again and
    again as they accumulate, costs about a fifth of the import time. When the
    block has imported the flow's modules for the first time, those objects are
    then frozen (:func:`gc.freeze`: later collections do not look at them).
    """
    fresh = "flows.study" not in sys.modules
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if fresh and "flows.study" in sys.modules:
            gc.freeze()
        if enabled:
            gc.enable()


def _import_flows() -> None:
    """Import the flow's modules (Prefect's engine and the pipeline: 2-3 s).

    Ctrl-C and SIGTERM are held back until the imports are done (2-3 s at
    most): a library cut in the middle of its import can fail with an
    unrelated error, which would be reported as a bug instead of "interrupted".
    """
    with _signals_held(), _collector_paused():
        import flows.study  # noqa: F401 - imported for its cost (while a temporary server starts)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM received in the block are acted on when it ends."""
    received: list[int] = []
    previous: dict[int, object] = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, lambda n, frame: received.append(n))
    except ValueError:  # not the main thread: signals cannot arrive here anyway
        pass
    try:
        yield
    finally:
        for number, handler in previous.items():
            _restore_signal(number, handler)
        if received:
            signal.raise_signal(received[0])


@contextlib.contextmanager
def _no_heartbeats_unless_configured() -> Iterator[None]:
    """Prefect's flow-run heartbeats off for this run, unless the user configured them.

    The heartbeat thread sleeps in 1 s steps and the flow waits for it to notice
    the end of the run: up to 1 s (0.5 s on average) on every run, for runs that
    take a few seconds. Heartbeats serve an automation that marks runs whose
    process died as crashed; whoever has one sets ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
    (environment, profile or ``prefect.toml``), and then they are sent as set.
    """
    from prefect.settings import get_current_settings, temporary_settings

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _run_flows(args: argparse.Namespace, runs: list) -> int:
    from flows.study import growth_studies, growth_study

    undo = (lambda: None) if args.debug else _quiet_failure_logs()
    try:
        if len(runs) == 1:
            (params,) = runs
            results = [
                growth_study(
                    config=str(params.config),
                    output=None if params.output is None else str(params.output),
                    outcome=params.outcome,
                    intercept_predictors=params.intercept_predictors,
                    slope_predictors=params.slope_predictors,
                    use_cache=params.use_cache,
                    dask=params.dask,
                )
            ]
        else:
            flow_ = growth_studies
            if args.dask:  # the studies run as tasks on the Dask cluster (Prefect's runner)
                flow_ = growth_studies.with_options(task_runner=_dask_task_runner(args, runs))
            results = flow_(
                configs=[str(params.config) for params in runs],
                output=args.output,
                outcome=args.outcome,
                intercept_predictors=args.intercept_predictors,
                slope_predictors=args.slope_predictors,
                use_cache=not args.no_cache,
                dask=args.dask,
            )
    finally:
        undo()
    for result in results:
        print(f"report: {_display(Path(result['report']))}")
    return EXIT_OK


def _dask_task_runner(args: argparse.Namespace, runs: list) -> Any:
    """prefect-dask's task runner on the cluster of ``--dask`` (a local one of the first
    study's ``[execution] workers`` processes for ``--dask local``); each study's
    partitions then run on the same cluster (:func:`pipeline.partitioned.executor_for`)."""
    from prefect_dask import DaskTaskRunner

    from flows.params import study_config

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(logging.ERROR)  # the run's own lines are its report
    if args.dask != "local":
        return DaskTaskRunner(address=args.dask)
    workers = study_config(runs[0]).execution.workers
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
            "silence_logs": logging.ERROR,
        }
    )


def _validate(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.errors import QuarantineLimitError, one_line
    from pipeline.io import load_data
    from pipeline.outcomes import validate_outcomes

    cfg = load_config(args.config)
    from pipeline.partitioned import executor_for, is_partitioned, read_partitioned

    if is_partitioned(cfg):  # a folder or glob of files: validated by partitions
        from types import SimpleNamespace

        try:
            with executor_for(cfg) as executor:
                data = read_partitioned(cfg, executor, validate_only=True)
            loaded, result, limit_error = data.loaded, data.validation, None
        except QuarantineLimitError as error:
            if error.validation is None:
                raise
            result, limit_error = error.validation, error
            loaded = SimpleNamespace(
                path=cfg.data_path,
                layout=cfg.data.layout,
                rows_in=result.file_rows,
                blank_lines=result.blank_lines,
            )
    else:
        loaded = load_data(cfg)
        try:
            result = validate_outcomes(loaded, cfg).run  # every outcome's checks
            limit_error = None
        except QuarantineLimitError as error:
            if error.validation is None:
                raise
            result, limit_error = error.validation, error
    print(f"{cfg.study.name}: {one_line(_display(loaded.path))}")
    if loaded.layout == "wide":
        print(
            f"file: {loaded.rows_in} rows read (wide), reshaped to {result.rows_in} "
            "occasions (long rows; empty waves are not occasions)"
        )
    if loaded.blank_lines:
        print(f"blank lines skipped: {loaded.blank_lines}")
    print(
        f"rows: {result.rows_in} in, {result.rows_used} valid, "
        f"{result.rows_quarantined} quarantined "
        f"({result.invalid_fraction:.1%}; limit {cfg.data.max_invalid_fraction:.1%})"
    )
    if result.missing_outcome:
        print(f"valid rows with a missing outcome (kept, not fitted): {result.missing_outcome}")
    if result.reasons.height > 1:
        print("reasons (a row can have several, so the counts can add up to more):")
    reasons = result.reasons.head(_MAX_REASONS).iter_rows(named=True)
    for row in reasons:
        print(f"  {row['rows']:>6} row(s): {one_line(str(row['reason']))}")
    if result.reasons.height > _MAX_REASONS:
        print(f"  ... and {result.reasons.height - _MAX_REASONS} more reason(s)")
    if limit_error is not None:
        raise limit_error
    checked = _model_problems(cfg, result)
    for warning in checked.warnings:
        print(f"  warning: {one_line(warning)} (the run leaves it out)")
    if checked.errors:
        print(f"error: {one_line(checked.errors[0])}", file=sys.stderr)
        return EXIT_USER
    if args.strict and result.rows_quarantined:
        print(
            f"error: {result.rows_quarantined} row(s) would be quarantined (--strict)",
            file=sys.stderr,
        )
        return EXIT_USER
    left_out = len(checked.warnings)
    print(
        ("valid" if not result.rows_quarantined else "valid (within the quarantine limit)")
        + (f"; {left_out} of {len(checked.models)} model(s) cannot be fitted" if left_out else "")
    )
    return EXIT_OK


def _model_problems(cfg, result):
    """Every model given to the engine's design step, as the run fits it (no fitting)."""
    from pipeline.reshape import split_levels
    from pipeline.validate import check_models

    return check_models(split_levels(result.valid, cfg), cfg)


def _init(args: argparse.Namespace) -> int:
    from pipeline.errors import ConfigError, one_line
    from pipeline.starter import starter_config

    data = Path(args.data).expanduser()
    if args.output:
        target = Path(args.output).expanduser()
    else:
        folder = Path("config") if Path("config").is_dir() else Path()
        target = folder / f"{data.stem}.toml"
    if target.exists():
        raise ConfigError(
            f"{one_line(str(target))}: already exists; not overwritten (use --output)"
        )
    text = starter_config(data, config_path=target.absolute())
    try:
        with target.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ConfigError(
            f"{one_line(str(target))}: already exists; not overwritten (use --output)"
        ) from None
    except OSError as error:
        raise ConfigError(f"{one_line(str(target))}: cannot write: {error.strerror}") from None
    print(f"config: {one_line(_display(target))}")
    print(f"next: growth validate {one_line(str(target))}, then growth run {one_line(str(target))}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from flows.serve import serve_studies

    serve_studies(Path(args.config_dir))
    return EXIT_OK


def _terminate_as_interrupt() -> object:
    """Make SIGTERM end the command like Ctrl-C (cleanup runs, a failed run is recorded)."""

    def terminated(number: int, frame: object) -> None:
        from pipeline.run import Interrupted

        raise Interrupted(number)

    try:
        return signal.signal(signal.SIGTERM, terminated)
    except ValueError:  # not the main thread (e.g. main() called from a test's thread)
        return None


def _restore_signal(number: int, handler: object) -> None:
    if handler is not None:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(number, handler)  # type: ignore[arg-type]


def _interrupted(error: BaseException, command: str | None = None) -> int:
    number = getattr(error, "signal", None)
    if number == signal.SIGTERM:
        tail = "; nothing was published" if command == "run" else ""
        print(f"error: terminated (SIGTERM){tail}", file=sys.stderr)
        return 128 + signal.SIGTERM
    print("error: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown (about 1 s after a run).

    Called when a ``growth run`` is over: every output file is written and closed
    by then, and the temporary Prefect server (if any) is stopped, since its
    ``with`` block in :func:`_run` has been left. What the exit would still do
    is done here: Prefect's queued events and logs are sent to the API, the
    exit handlers run (:mod:`atexit`: the logging handlers are flushed, a local
    server that Prefect itself started is stopped, ...) and stdout/stderr are
    flushed; only the slow teardown of every module is skipped.
    """
    from flows.tempserver import drain_prefect

    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: end now all the same
        drain_prefect()
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``growth`` console script; returns the exit code.

    As the console script (``argv`` is ``None``), ``growth run`` ends the process
    itself once the run is over (:func:`_exit_now`); called with ``argv`` (tests,
    other Python code), ``main`` always returns.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.debug = getattr(args, "debug", False)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USER
    code = _execute(args)
    if argv is None and args.command == "run":
        _exit_now(code)
    return code


def _execute(args: argparse.Namespace) -> int:
    if args.debug:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    apply_prefect_defaults()
    from pipeline.errors import GrowthError, one_line

    previous_term = _terminate_as_interrupt()
    try:
        return args.handler(args)
    except GrowthError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt as error:
        return _interrupted(error, args.command)
    except Exception as error:  # noqa: BLE001 - a bug: one line unless --debug
        if args.debug:
            traceback.print_exc()
        text = one_line(str(error).splitlines()[0]) if str(error).strip() else ""
        print(
            f"error: {type(error).__name__}: {text} (this is a bug; "
            "run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_BUG
    except BaseException as error:
        if isinstance(getattr(error, "signal", None), int):  # Prefect's TerminationSignal
            return _interrupted(error, args.command)
        raise
    finally:
        _restore_signal(signal.SIGTERM, previous_term)


if __name__ == "__main__":
    sys.exit(main())
