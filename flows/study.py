"""The Prefect flow ``growth_study``: load -> validate -> reshape -> analyse -> report -> write.

Each task calls one ``pipeline`` function; the flow only wires them, prints one
progress line per stage and publishes the artifacts. No statistics here.

- Before any work, the output folder is checked (:func:`pipeline.outputs.check_output_folder`):
  an unwritable folder, a file in the way or a planted symlink is one line, at once.
- ``load`` reads a private snapshot of the data file, hashed as it is copied
  (:func:`pipeline.run.load_exact`), and retries when reading fails for a reason
  that may pass (:class:`pipeline.run.TransientReadError`: a network share that is
  briefly away); a missing file or column is not retried.
- ``analyse`` is cached: the key is the data file's SHA-256, the fit-relevant
  config sections, the code version and the library versions
  (:func:`pipeline.runinfo.analysis_fingerprint`). Results are pickles, so they
  are kept in a private per-user folder (:mod:`flows.cache`:
  ``$GROWTH_CACHE_DIR/<study>``, default ``~/.cache/growthcurves/<study>``, mode
  0700), never in the published output folder that others may be able to
  write; a folder that is not private is not used (one warning, no cache). The
  cache works with the temporary local server as well as with a long-running one.
- A run that fits no model fails (:func:`pipeline.run.require_fits`): ``latest``
  and the published report are left alone.
- On any failure after the config was read, also Ctrl-C or SIGTERM, a run folder
  with the quarantine (when validation got that far), ``failure.md`` and a
  manifest is written (:func:`pipeline.run.record_failure`), then the error is
  raised again. A run folder already in place is never reported as failed: a
  problem publishing it raises :class:`pipeline.outputs.PublishError`.

The run's files, manifest, comparison and failure record are made by
:mod:`pipeline.run` and :mod:`pipeline.outputs` (no Prefect); this module wires.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.runtime import flow_run

from flows import artifacts
from flows.cache import cache_origin, record_cache_origin, study_cache_dir
from flows.context import report_context
from flows.params import RunParameters, study_config
from pipeline.analysis import CACHE_MAX_ROWS, analyse, fits_cacheable
from pipeline.config import StudyConfig
from pipeline.errors import ConfigError, GrowthError, QuarantineLimitError, one_line
from pipeline.io import LoadedData
from pipeline.outcomes import OutcomeValidation, combined_analysis, validate_outcomes
from pipeline.outputs import (
    QUARANTINE,
    REPORT,
    RUNS,
    CommittedRun,
    PublishError,
    StagedRun,
    check_output_folder,
    discard_run,
    new_run_id,
    stage_run,
)
from pipeline.partitioned import (
    PartitionedData,
    executor_for,
    is_partitioned,
    read_partitioned,
)
from pipeline.report import build_figures, prefetch_javascript, render_report, write_report_files
from pipeline.report.outcomes import stack_tables
from pipeline.reshape import Descriptives, Levels, describe, split_levels
from pipeline.run import (
    failure_summary,
    is_transient,
    load_exact,
    manifest_fields,
    previous_changes,
    record_failure,
    require_fits,
    write_run,
)
from pipeline.runinfo import analysis_fingerprint, code_version, library_versions
from pipeline.validate import ValidationResult

__all__ = ["failure_summary", "growth_studies", "growth_study", "is_transient", "run_study"]

LOAD_RETRIES = 2
LOAD_RETRY_DELAYS = [1, 5]


class _OneLineUserErrors(logging.Filter):
    """Prefect's record of a run that failed on a user error: one line, no traceback.

    A bad parameter from the UI (or a bad config, a missing column) raises a
    :class:`GrowthError`; Prefect logs it with its traceback for the flow run and
    again for the task run, 80 lines each in the ``growth serve`` terminal. The
    record keeps its level and is turned into ``error: <message>`` (also in the
    UI's log). Any other exception (a bug) keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, GrowthError) or type(error).__name__ == "ParameterTypeError":
            record.msg = "error: %s"
            record.args = (one_line(str(error)),)
            record.exc_info = None
            record.exc_text = None
        return True


def _one_line_user_errors() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(item, _OneLineUserErrors) for item in logger.filters):
            logger.addFilter(_OneLineUserErrors())


_one_line_user_errors()  # also in a deployment's flow-run process, which imports this module


def progress(study: str, stage: str, message: str) -> None:
    """One progress line per stage, on stderr: ``[early] validate: 309 rows in, ...``."""
    print(f"[{study}] {stage}: {message}", file=sys.stderr, flush=True)


def _retry_read(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as error:  # the failed state re-raises the task's exception
        return is_transient(error)
    return False


def _fit_config(cfg: StudyConfig, own: StudyConfig, *, several: bool) -> dict[str, Any]:
    """The config that keys an outcome's cached fits: its own config (so the outcome
    analysed is in the key), plus, with several outcomes, the run's outcome list (every
    outcome's checks decide which rows are valid)."""
    config = own.model_dump(mode="json")
    if several:
        config["data"] = {**config["data"], "run_outcomes": list(cfg.outcomes)}
    return config


def _analysis_key(context: Any, parameters: dict[str, Any]) -> str:
    return f"growth-analysis-{parameters['fingerprint']}"


@task(
    name="load",
    retries=LOAD_RETRIES,
    retry_delay_seconds=LOAD_RETRY_DELAYS,
    retry_condition_fn=_retry_read,
    cache_policy=NO_CACHE,
)
def load_task(cfg: StudyConfig) -> LoadedData:
    return load_exact(cfg)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(loaded: LoadedData, cfg: StudyConfig) -> OutcomeValidation:
    """Every outcome's checks; the rows of the run (:func:`pipeline.outcomes.validate_outcomes`)."""
    return validate_outcomes(loaded, cfg)


@task(name="reshape", cache_policy=NO_CACHE)
def reshape_task(validation: ValidationResult, cfg: StudyConfig) -> tuple[Levels, Descriptives]:
    levels = split_levels(validation.valid, cfg)
    return levels, describe(levels, cfg)


@task(name="partitions", cache_policy=NO_CACHE, persist_result=False)
def partitions_task(cfg: StudyConfig) -> PartitionedData:
    """Read, validate, reshape and reduce a partitioned data set (pipeline.partitioned)."""
    with executor_for(cfg) as executor:
        return read_partitioned(cfg, executor)


@task(name="analyse", cache_policy=NO_CACHE, persist_result=False)
def analyse_task(
    levels: Levels, cfg: StudyConfig, fingerprint: str, partitioned: Any = None
) -> Any:
    """Fit the models; not cached as such: :func:`_cached_analyse` adds the private cache.

    ``partitioned``: the merged statistics of a partitioned data set (fits on all of it)."""
    return analyse(levels, cfg, partitioned=partitioned)


def _cached_analyse(study: str, *, refresh: bool) -> Any:
    """``analyse_task`` persisting its result in the study's private cache folder.

    Without a usable private folder (see :func:`flows.cache.study_cache_dir`) the
    plain task: nothing is read from or written to any cache.
    """
    folder = study_cache_dir(study)
    if folder is None:
        return analyse_task
    return analyse_task.with_options(
        cache_policy=CachePolicy.from_cache_key_fn(_analysis_key),
        persist_result=True,
        result_storage=folder,
        refresh_cache=refresh,
    )


@task(name="report", cache_policy=NO_CACHE)
def report_task(context: Any, staged: StagedRun) -> Path:
    figures = build_figures(context)
    report = staged.write_text(REPORT, render_report(context, figures=figures))
    write_report_files(context=context, folder=staged.staging, figures=figures)
    return report


@task(name="write outputs", cache_policy=NO_CACHE)
def write_outputs_task(
    staged: StagedRun,
    validation: ValidationResult,
    fields: dict[str, Any],
    keep_runs: int | None = None,
) -> CommittedRun:
    return write_run(staged, validation, fields, keep_runs=keep_runs)


def _flow_run_facts() -> dict[str, str]:
    run_id = flow_run.get_id()
    return {"flow_run_id": str(run_id), "flow_run_name": str(flow_run.get_name())} if run_id else {}


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@flow(name="growth-study", validate_parameters=True)
def growth_study(
    config: str,
    output: str | None = None,
    outcome: str | None = None,
    intercept_predictors: list[str] | None = None,
    slope_predictors: list[str] | None = None,
    use_cache: bool = True,
    dask: str | None = None,
) -> dict[str, Any]:
    """Run a growth-curve study: validate the data, fit the model sequence, write the report.

    Parameters: ``config`` the study config (TOML); ``output`` the output folder
    (default: ``[output] dir`` of the config); ``outcome`` analyse this column
    instead of ``[data] outcome``; ``intercept_predictors`` / ``slope_predictors``
    the person-level predictors of status / of change in the conditional model
    (instead of ``[models]``); ``use_cache`` reuse fits of an unchanged study; ``dask``
    a Dask scheduler address (or ``"local"``) for the per-partition work.
    """
    params = RunParameters.parse(
        config=config,
        output=output,
        outcome=outcome,
        intercept_predictors=intercept_predictors,
        slope_predictors=slope_predictors,
        use_cache=use_cache,
        dask=dask,
    )
    return run_study(params)


@task(name="study", cache_policy=NO_CACHE)
def study_task(params: RunParameters) -> dict[str, Any]:
    return run_study(params)


@flow(name="growth-studies", validate_parameters=True)
def growth_studies(
    configs: list[str],
    output: str | None = None,
    outcome: str | None = None,
    intercept_predictors: list[str] | None = None,
    slope_predictors: list[str] | None = None,
    use_cache: bool = True,
    dask: str | None = None,
) -> list[dict[str, Any]]:
    """Run several studies in parallel (one mapped task each); one failure loses no other.

    With ``output``, study ``<name>`` writes to ``output/<name>``. When any study
    fails, the others still finish and write their outputs; then a
    :class:`GrowthError` names every study that failed and why.
    """
    if not configs:
        raise ConfigError("parameter 'configs': expected at least one study config")
    runs: list[RunParameters] = []
    names: dict[str, str] = {}
    for config in configs:
        params = RunParameters.parse(
            config=config,
            outcome=outcome,
            intercept_predictors=intercept_predictors,
            slope_predictors=slope_predictors,
            use_cache=use_cache,
            dask=dask,
        )
        name = study_config(params).study.name
        if name in names:
            raise ConfigError(
                f"{config}: [study] name '{name}' is also the name in {names[name]}; "
                "studies run together need different names"
            )
        names[name] = config
        if output is not None:
            params = params.model_copy(update={"output": Path(output) / name})
        runs.append(params)
    futures = study_task.map(runs)
    futures.wait()
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    for name, future in zip(names, futures, strict=True):
        state = future.state
        if state.is_completed():
            results.append(future.result())
            continue
        try:
            future.result()
        except GrowthError as error:
            failed.append(f"{name}: {error}")
        except Exception as error:  # noqa: BLE001 - reported with the others
            failed.append(f"{name}: {type(error).__name__}: {error}")
        else:
            failed.append(f"{name}: ended in state {state.name}")
    if failed:
        raise GrowthError(
            f"{len(failed)} of {len(runs)} studies failed ({len(results)} succeeded): "
            + " | ".join(failed)
        )
    return results


def run_study(params: RunParameters) -> dict[str, Any]:
    """The body of :func:`growth_study` (inside a flow run)."""
    prefetch_javascript()  # the report's JavaScript bundle loads while the data load and fit
    cfg = study_config(params)
    study = cfg.study.name
    root = (params.output.expanduser().resolve() if params.output else cfg.output_dir).absolute()
    check_output_folder(root)  # unwritable, a file in the way, a planted link: now, not later
    keep_runs = cfg.output.keep_runs
    started = datetime.now(UTC)
    facts = _flow_run_facts()
    run_id = new_run_id(started, facts.get("flow_run_id"))
    versions = library_versions()
    code = code_version()
    base = {
        "cfg": cfg,
        "overrides": params.overrides,
        "versions": versions,
        "code_version": code,
        "flow_run": facts,
    }
    loaded: LoadedData | None = None
    validation: ValidationResult | None = None
    staged: StagedRun | None = None
    partitioned: PartitionedData | None = None
    try:
        if is_partitioned(cfg):
            try:
                partitioned = partitions_task(cfg)
            except QuarantineLimitError as error:
                validation = error.validation
                raise
            loaded, validation = partitioned.loaded, partitioned.validation
            checked = OutcomeValidation(run=validation, per_outcome={cfg.outcomes[0]: validation})
            execution = partitioned.facts
            progress(
                study,
                "load",
                f"{_display(loaded.path)}: {execution['files']} file(s), {loaded.rows_in} rows "
                f"({loaded.format}, {loaded.layout}), {execution['partitions']} partitions "
                f"({execution['backend']}, {execution['workers']} worker(s))",
            )
        else:
            loaded = load_task(cfg)
            progress(
                study,
                "load",
                f"{_display(loaded.path)}, {loaded.rows_in} rows ({loaded.format}, {loaded.layout})",
            )
            try:
                checked = validate_task(loaded, cfg)
            except QuarantineLimitError as error:
                validation = error.validation
                raise
            validation = checked.run
        progress(
            study,
            "validate",
            f"{validation.rows_in} rows in, {validation.rows_used} used, "
            f"{validation.rows_quarantined} quarantined",
        )
        names = cfg.outcomes
        several = len(names) > 1
        configs = {name: cfg.for_outcome(name) if several else cfg for name in names}
        stages: dict[str, tuple[Levels, Descriptives]] = {}
        for name in names:
            if partitioned is not None:  # the sample's levels (the fits use all the data)
                stages[name] = (partitioned.levels, partitioned.descriptives)
            else:
                stages[name] = reshape_task(checked.per_outcome[name], configs[name])
            summary = stages[name][1].summary
            row = summary.row(0, named=True) if summary.height else {}
            progress(
                study,
                f"reshape {name}" if several else "reshape",
                f"{row.get('persons', '?')} persons, {row.get('occasions', '?')} occasions",
            )
        fingerprints = {
            name: analysis_fingerprint(
                data_sha256=loaded.sha256,
                config=_fit_config(cfg, configs[name], several=several),
                code=code,
                versions=versions,
            )
            for name in names
        }
        # a large study's fits are not cached: their pickle would cost more memory than a refit
        large = not fits_cacheable(stages[names[0]][0])
        cache_folder = None if large else study_cache_dir(study)
        cached_analyse = (
            analyse_task if large else _cached_analyse(study, refresh=not params.use_cache)
        )
        if several:  # one task per outcome, run as the flow's task runner decides
            futures = {
                name: cached_analyse.with_options(task_run_name=f"analyse {name}").submit(
                    stages[name][0], configs[name], fingerprints[name]
                )
                for name in names
            }
            states = {}
            for name, future in futures.items():
                future.wait()
                states[name] = future.state
        else:
            name = names[0]
            states = {
                name: cached_analyse(
                    stages[name][0],
                    configs[name],
                    fingerprints[name],
                    partitioned.statistics if partitioned is not None else None,
                    return_state=True,
                )
            }
        analyses = {name: state.result() for name, state in states.items()}
        reused_by = {name: state.name == "Cached" for name, state in states.items()}
        for name in names:
            analysis = analyses[name]
            reused = reused_by[name]
            failed = analysis.failures.height
            if reused and cache_folder is not None:
                note = f" (reused cached fits: {cache_origin(cache_folder, fingerprints[name])})"
            else:
                note = f" (fits not cached: more than {CACHE_MAX_ROWS:,} rows)" if large else ""
                if cache_folder is not None and analysis.fits:
                    record_cache_origin(
                        cache_folder, fingerprints[name], config=cfg.source_path, run_id=run_id
                    )
            failed_names = ", ".join(analysis.failures["model"].to_list()) if failed else ""
            failed_text = f"{failed} failed" + (f" ({failed_names})" if failed_names else "")
            progress(
                study,
                f"analyse {name}" if several else "analyse",
                f"{len(analysis.fits)} model(s) fitted, {failed_text}{note}",
            )
        for name in names:
            require_fits(analyses[name], study=f"{study} (outcome {name})" if several else study)
        reused = all(reused_by.values())
        first = names[0]
        descriptives = stages[first][1]
        analysis = analyses[first] if not several else combined_analysis(analyses)
        fields = manifest_fields(
            **base,
            loaded=loaded,
            validation=validation,
            descriptives=descriptives if not several else None,
            analysis=analysis,
            fingerprint=fingerprints[first] if not several else None,
            reused_fits=reused,
            outcomes={
                name: (
                    checked.per_outcome[name],
                    stages[name][1],
                    analyses[name],
                    fingerprints[name],
                    reused_by[name],
                )
                for name in names
            }
            if several
            else None,
        )
        if partitioned is not None:
            fields["execution"] = partitioned.facts
        fixed = (
            stack_tables({name: analyses[name].tables.get("fixed_effects") for name in names})
            if several
            else analysis.tables.get("fixed_effects")
        )
        fields["changes"] = previous_changes(root, fields, fixed, several=several)
        staged = stage_run(root, run_id, started)
        context = report_context(
            cfg=cfg,
            loaded=loaded,
            validation=validation,
            outcomes={
                name: (checked.per_outcome[name], *stages[name], analyses[name]) for name in names
            },
            versions=versions,
            overrides=params.overrides,
            quarantine_file=QUARANTINE,
            changes=fields["changes"],
        )
        report_task(context, staged)
        rendered = sum(len(own.tables) for own in context.outcomes) or len(context.tables)
        progress(study, "report", f"{rendered} tables rendered")
        committed = write_outputs_task(staged, validation, fields, keep_runs)
    except PublishError:
        raise  # the run folder is in place and complete: not a failed run
    except BaseException as error:
        if staged is not None:
            discard_run(staged)
        _record_failure(root, run_id, started, cfg, error, loaded, validation, base, keep_runs)
        raise
    if committed.published:
        progress(study, "outputs", f"{_display(committed.folder)} (latest)")
    else:
        progress(
            study,
            "outputs",
            f"{_display(committed.folder)} (not latest: a run that started later was "
            "published first)",
        )
    try:
        artifacts.publish(
            study=study,
            title=cfg.study.title,
            run_id=run_id,
            report=committed.folder / REPORT,
            manifest=committed.manifest,
            analysis=analysis,
        )
    except Exception as error:  # noqa: BLE001 - the run is complete; only the artifacts are missing
        progress(study, "artifacts", f"warning: could not publish the Prefect artifacts: {error}")
    return {
        "study": study,
        "run_id": run_id,
        "run_folder": str(committed.folder),
        "report": str(committed.latest_report),
        "manifest": str(committed.root / "manifest.json"),
        "rows_in": validation.rows_in,
        "rows_used": validation.rows_used,
        "rows_quarantined": validation.rows_quarantined,
        "reused_cached_fits": reused,
        "latest": committed.published,
    }


def _record_failure(
    root: Path,
    run_id: str,
    started: datetime,
    cfg: StudyConfig,
    error: BaseException,
    loaded: LoadedData | None,
    validation: ValidationResult | None,
    base: dict[str, Any],
    keep_runs: int | None,
) -> None:
    """Write the failed run's folder; a problem doing so must not hide the original error."""
    if (root / RUNS / run_id).exists():
        return  # the run folder got into place before the interruption
    fields = manifest_fields(**base, loaded=loaded, validation=validation)
    try:
        committed = record_failure(
            root=root,
            run_id=run_id,
            started=started,
            cfg=cfg,
            error=error,
            fields=fields,
            validation=validation,
            keep_runs=keep_runs,
        )
    except Exception as problem:  # noqa: BLE001 - reported, the original error is raised
        progress(cfg.study.name, "failed", f"could not write the failure summary: {problem}")
        return
    progress(
        cfg.study.name, "failed", f"quarantine and failure summary in {_display(committed.folder)}"
    )
