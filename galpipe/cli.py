"""The `galpipe` command.

  galpipe run      materialize every asset of a project (--profile NAME: a shipped one; --config FILE: yours)
                   against the project directory's Dagster instance
                   (DAGSTER_HOME), one run of a named stage job per partition, and print the evaluation table;
                   --from STAGE and --budgets re-run part of it on what was materialized before
  galpipe predict  classify a folder or catalogue of cutouts with registered models
  galpipe ui       start the Dagster and MLflow UIs on 127.0.0.1

A user error (a missing file, an unknown model) ends with one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

# Nothing heavy at the top: worker processes started with "spawn" (the renderers) import this
# module again as their __main__, and galpipe.project would pull in torch and MLflow (4 s each).

# The stages of `galpipe run`, in lineage order; `--from` starts at one of them.
RUN_STAGES = ("data", "pretrained_model", "finetuned_models", "evaluation_table")
# Dagster's console shows INFO and up (epochs, rendering progress, warnings), not every step event.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def project_argument(args) -> str:
    """The project a command works on: --config FILE, else --profile NAME, else $GALPIPE_PROJECT."""
    from galpipe.project import current_project

    return args.config or args.profile or current_project()


def _run(args) -> int:
    from galpipe.instance import write_instance_config
    from galpipe.project import load_project, project_reference
    from galpipe.run_queue import DAEMON_LOG, check_evaluations, run_steps, threads_per_run

    project_arg = project_argument(args)
    project = load_project(project_arg)  # every key checked before any work
    os.environ["GALPIPE_PROJECT"] = project_reference(project_arg)  # for Dagster's code, as `galpipe ui` sets it
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    dagster_home.mkdir(parents=True, exist_ok=True)
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1")
    if not write_instance_config(dagster_home, args.workers if args.workers > 1 else None) and args.workers > 1:
        print(f"[galpipe run] {dagster_home / 'dagster.yaml'} is yours: its run queue limits apply", flush=True)
    from dagster import DagsterInstance, Definitions

    from galpipe.definitions import ALL_CHECKS, all_assets, build_resources
    from galpipe.defs.jobs import DATA_KEYS, JOBS
    from galpipe.defs.prediction_assets import prediction_chunks
    from galpipe.recovery import fail_stale_runs
    resources = build_resources(project_arg)
    tasks = resources["settings"].tasks
    defs = Definitions(assets=all_assets(project_arg), asset_checks=ALL_CHECKS, jobs=JOBS, resources=resources)
    budgets = _budgets(args.budgets, project.profile)
    print(f"[galpipe run] project {project.name} ({project.path}): experiment {project.experiment}, tasks "
          f"{', '.join(tasks)}, {project.source.name} -> {project.target.name}", flush=True)
    steps = pipeline_steps(tasks, budgets, prediction_chunks.get_partition_keys(), args.from_stage)
    started = time.perf_counter()

    finished, not_ok = [], set()  # labels reported so far, and those that failed or were skipped

    def report(step, record: dict) -> None:
        """A line per finished run, with the asset checks it evaluated."""
        finished.append(step.label)
        verdict = "ok" if record["ok"] else "FAILED"
        if record.get("skipped"):
            verdict = "skipped, for want of " + ", ".join(label for label in step.needs if label in not_ok)
        if not record["ok"]:
            not_ok.add(step.label)
        print(f"[galpipe run {len(finished)}/{len(steps)}] {step.label}: {verdict} ({record['seconds']:.1f} s; "
              f"{time.perf_counter() - started:.0f} s in all)", flush=True)
        checks = record.pop("checks", None)  # in-process results carry them; a queued run's are in its events
        if checks is None and "dagster_run_id" in record:
            checks = check_evaluations(instance, record["dagster_run_id"])
        for evaluation in checks or []:
            print(f"  check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}: "
                  f"{'passed' if evaluation.passed else 'FAILED'}")

    with DagsterInstance.get() as instance:
        for line in fail_stale_runs(instance, resources["mlflow"].tracking_uri):
            print(f"[galpipe run] {line}", flush=True)
        _require_upstream(instance, args.from_stage, DATA_KEYS, tasks)
        # The MLflow store and experiment made here, once: parallel runs creating a new SQLite store race
        # in its schema migration.
        resources["mlflow"].tracker(resources["settings"])
        if args.workers > 1:
            print(f"[galpipe run] through Dagster's run queue: at most {args.workers} runs at once, "
                  f"{threads_per_run(args.workers)} thread(s) each; the runs' own output goes to "
                  f"{resources['settings'].run_dir / DAEMON_LOG}", flush=True)
            timings = run_steps(instance, defs, steps, args.workers, QUIET, resources["settings"].run_dir / DAEMON_LOG,
                                report)
        else:
            timings = _run_in_process(instance, defs, steps, report)
    failed = [t["step"] for t in timings if not t["ok"]]
    seconds = time.perf_counter() - started
    whole = args.from_stage == "data" and args.budgets is None  # bench/run.py reads the whole pipeline's file
    _write_timings(resources["settings"].run_dir / ("run_timings.json" if whole else "run_timings_partial.json"),
                   project.name, seconds, timings, args.from_stage, budgets)
    print(f"\ngalpipe run, project {project.name}: {'succeeded' if not failed else 'FAILED: ' + ', '.join(failed)} "
          f"in {seconds:.1f} s (DAGSTER_HOME={dagster_home})")
    table = resources["settings"].run_dir / "evaluation_table.parquet"
    if not failed and table.is_file():
        import pandas as pd

        summary = pd.read_parquet(table)
        shown = ["task", "label_budget", "strategy", "selection", "n_seeds", "accuracy_mean", "accuracy_std",
                 "seed_ensemble_accuracy", "completeness_1_mean", "purity_1_mean", "roc_auc_mean"]
        print(summary[[c for c in shown if c in summary]].round(3).to_string(index=False))
        goals = resources["settings"].run_dir / "adaptation_goals.csv"
        if goals.is_file():
            print("\nAdaptation goals (best on the test set, so optimistic):")
            print(pd.read_csv(goals)[["task", "direct_accuracy", "best_unsupervised", "best_unsupervised_accuracy",
                                      "unsupervised_goal_met", "reference", "reference_accuracy", "best_few_labels",
                                      "best_few_labels_accuracy", "few_labels_goal_met"]].round(3).to_string(index=False))
    return 0 if not failed else 1


def pipeline_steps(tasks, budgets, prediction_chunks, from_stage: str = "data") -> list:
    """The runs of `galpipe run`, one per job and partition, in lineage order, each with the runs it
    reads from; those before `from_stage` are left out (their materializations are read instead)."""
    from dagster import MultiPartitionKey

    from galpipe.run_queue import Step

    data = ("data",)
    pretraining = {t: f"pretrained_model[{t}]" for t in tasks}
    steps = [Step("data", "data", "data_job")]
    steps += [Step("pretrained_model", pretraining[t], "pretraining_job", t, needs=data) for t in tasks]
    steps += [Step("finetuned_models", f"finetuned_models[{t}|{b}]", "finetuning_job",
                   MultiPartitionKey({"task": t, "budget": b}), needs=(*data, pretraining[t]))
              for t in tasks for b in budgets]
    # The evaluation reads whatever fine-tuning was materialized, so it waits for every run, failed or not.
    steps.append(Step("evaluation_table", "evaluation_table", "evaluation_job", needs=data,
                      after=tuple(s.label for s in steps)))
    steps.append(Step("evaluation_table", "champion_evaluation", "reevaluation_job", needs=("evaluation_table",)))
    steps += [Step("evaluation_table", f"target_morphology[{chunk}]", "prediction_job", chunk,
                   needs=("evaluation_table",)) for chunk in prediction_chunks]
    first = RUN_STAGES.index(from_stage)
    kept = [step for step in steps if RUN_STAGES.index(step.stage) >= first]
    labels = {step.label for step in kept}
    return [replace(step, needs=tuple(n for n in step.needs if n in labels),
                    after=tuple(a for a in step.after if a in labels)) for step in kept]


def _run_in_process(instance, defs, steps: list, report) -> list[dict]:
    """The steps one after another in this process (`--workers 1`, the default): no daemon, no server."""
    from galpipe.liveness import process_token
    from galpipe.recovery import DAGSTER_PROCESS_TAG

    done = {}
    for step in steps:
        if any(not done[label]["ok"] for label in step.needs):
            done[step.label] = {"step": step.label, "ok": False, "skipped": True, "seconds": 0.0}
            report(step, done[step.label])
            continue
        started = time.time()
        result = defs.resolve_job_def(step.job).execute_in_process(
            instance=instance, partition_key=step.partition, raise_on_error=False, run_config=QUIET,
            tags={DAGSTER_PROCESS_TAG: process_token()})
        done[step.label] = {"step": step.label, "ok": result.success, "seconds": round(time.time() - started, 2),
                            "started": started, "ended": time.time(), "dagster_run_id": result.run_id,
                            "checks": result.get_asset_check_evaluations()}
        report(step, done[step.label])
    return [done[step.label] for step in steps]


def _budgets(requested: str | None, profile) -> tuple[str, ...]:
    """The label budgets to fine-tune: the project's, or those of them asked for (in the project's order)."""
    if requested is None:
        return profile.label_budgets
    asked = [b.strip() for b in requested.split(",") if b.strip()]
    unknown = [b for b in asked if b not in profile.label_budgets]
    if unknown or not asked:
        raise UserError(f"--budgets {requested}: each must be one of the project's label budgets, "
                        f"{', '.join(profile.label_budgets)}")
    return tuple(b for b in profile.label_budgets if b in asked)


def _require_upstream(instance, from_stage: str, data_keys, tasks) -> None:
    """`--from` re-runs from a stage on what this project has already materialized; say what is missing."""
    from dagster import AssetKey

    missing = []
    if RUN_STAGES.index(from_stage) > 0:
        missing += [k.to_user_string() for k in data_keys if instance.get_latest_materialization_event(k) is None]
    if RUN_STAGES.index(from_stage) > 1:
        done = instance.get_materialized_partitions(AssetKey("pretrained_model"))
        missing += [f"pretrained_model[{t}]" for t in tasks if t not in done]
    if RUN_STAGES.index(from_stage) > 2 and not instance.get_materialized_partitions(AssetKey("finetuned_models")):
        missing.append("finetuned_models (any partition)")
    if missing:
        raise UserError(f"--from {from_stage}: this project (DAGSTER_HOME={instance.root_directory}) has not "
                        f"materialized {', '.join(missing)}; run the earlier stages first")


def _write_timings(path: Path, project: str, seconds: float, steps: list[dict], from_stage: str = "data",
                   budgets=()) -> None:
    import json
    import platform

    from galpipe.hardware import machine_info

    record = {"profile": project, "from": from_stage, "budgets": list(budgets),
              "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
              "machine": machine_info(), "seconds": round(seconds, 1), "steps": steps}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))


def _predict(args) -> int:
    from galpipe.prediction import list_cutouts, load_classifier, model_uris, predict_cutouts
    from galpipe.tracking import default_tracking_uri, sqlite_path

    # Every argument is checked before any work, so that a typo never costs a whole run.
    if not args.out.lower().endswith((".parquet", ".csv")):
        raise UserError(f"--out {args.out}: the morphology catalogue must end in .parquet or .csv")
    if Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; give the catalogue file to write")
    if args.workers < 0:
        raise UserError(f"--workers {args.workers}: give 0 (read in this process) or more reader processes")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: give at least 1")
    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold {args.threshold:g}: a probability threshold lies in [0, 1]")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: give at least 1")
    if args.pixel_scale is not None and not args.pixel_scale > 0:
        raise UserError(f"--pixel-scale {args.pixel_scale:g}: give a positive number of arcsec per pixel")
    args.tracking_uri = args.tracking_uri or default_tracking_uri()
    store = sqlite_path(args.tracking_uri)
    if store is not None and not store.is_file():  # MLflow would create an empty store and find no model
        raise UserError(f"--tracking-uri {args.tracking_uri}: no MLflow store at {store.resolve()}")
    from galpipe.project import load_project

    aliases = [spec for spec in args.model if not spec.startswith("models:/")]
    # An alias names a model of the project's experiment, tasks and target survey, unless all three are given.
    project = load_project(project_argument(args)) if aliases and not (args.experiment and args.tasks and args.survey) \
        else None
    experiment = args.experiment or (project.experiment if project else "")
    tasks = args.tasks.split(",") if args.tasks else list(project.tasks if project else ())
    survey = args.survey or (project.target.name if project else "")
    uris = [uri for spec in args.model for uri in model_uris(spec, tasks, survey, experiment)]
    classifiers = [load_classifier(args.tracking_uri, uri) for uri in uris]
    tasks_seen = [k.task for k in classifiers]
    repeated = sorted({t for t in tasks_seen if tasks_seen.count(t) > 1})
    if repeated:
        raise UserError(f"two models for task(s) {repeated}: give one model per task")
    cutouts = list_cutouts(args.folder, args.catalog, args.id_column, args.image_column)
    if cutouts.empty:
        raise UserError(f"{args.catalog}: the catalogue lists no cutouts")
    print(f"[galpipe predict] experiment {experiment or '(models named by URI)'}; {len(cutouts)} cutouts, models: " + ", ".join(
        f"{k.task}={k.model_uri} ({k.input_mode})" for k in classifiers), file=sys.stderr)
    summary = predict_cutouts(classifiers, cutouts, args.out, args.threshold, args.batch_size, args.pixel_scale,
                              on_failure=lambda r: print(f"  skipped {r['path'] or r['object_id']}: {r['reason']}",
                                                         file=sys.stderr), workers=args.workers, threads=args.threads)
    print(f"[galpipe predict] wrote {summary.n_written} rows to {summary.out_path}; skipped {len(summary.failures)}"
          + (f" (listed in {summary.out_path.name}.failed.csv)" if summary.failures else "")
          + f"; {summary.galaxies_per_second:.1f} galaxies/s", file=sys.stderr)
    if summary.n_written == 0:
        raise UserError(f"no cutout could be classified; the first reason: {summary.failures[0]['reason']}")
    return 0


def _ui(args) -> int:
    from galpipe.project import load_project, project_reference
    from galpipe.ui import run_ui

    load_project(project_argument(args))  # checked before the servers start, not a minute later in Dagster's log
    return run_ui(args, project_reference(project_argument(args)))


def add_project_arguments(parser, why: str = "") -> None:
    """--profile NAME (a shipped project) or --config FILE (a project file); default $GALPIPE_PROJECT or small."""
    from galpipe.project import DEFAULT_PROJECT, shipped_projects

    which = parser.add_mutually_exclusive_group()
    which.add_argument("--profile", choices=shipped_projects(),
                       help=f"a shipped project {why}(galpipe/projects/NAME.yaml; default: $GALPIPE_PROJECT or "
                            f"{DEFAULT_PROJECT})")
    which.add_argument("--config", metavar="FILE", help=f"a project file (YAML) {why}")


class UserError(Exception):
    """Something the user can fix; reported in one line, without a traceback."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from galpipe.catalogs import CatalogError
    from galpipe.cutouts import CutoutError
    from galpipe.project import ProjectError
    from galpipe.tracking import ModelRegistryError

    # FileNotFoundError (galpipe raises it naming the path), and other OSErrors about a path (a file
    # where a folder should be, no permission): main() lets those that name no path go by.
    return UserError, CatalogError, CutoutError, ModelRegistryError, ProjectError, OSError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="galpipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialize every asset of a project")
    add_project_arguments(run)
    run.add_argument("--from", dest="from_stage", choices=RUN_STAGES, default="data",
                     help="start at this stage, on what this project materialized before (e.g. after a new "
                          "strategy: --from finetuned_models); default: %(default)s")
    run.add_argument("--budgets", help="fine-tune only these label budgets, comma-separated (default: the "
                                       "profile's); the evaluation table still reads every materialized one")
    run.add_argument("--workers", type=int, default=1,
                     help="runs at once: above 1, each step is a run in Dagster's queue, launched by the Dagster "
                          "daemon (started here unless one serves the instance) with cores/N threads "
                          "(default: %(default)s, every step in this process, one after another)")
    run.set_defaults(func=_run)

    predict = commands.add_parser(
        "predict", help="classify cutouts with registered models into a Parquet or CSV catalogue",
        description="Classify a folder or catalogue of cutouts (FITS, JPEG, PNG) with registered models: "
                    "one row per readable cutout with p_<task> and <task> (class at --threshold); "
                    "unreadable cutouts are named on stderr and in <out>.failed.csv.")
    predict.add_argument("--model", action="append", required=True,
                         help="a model URI (models:/galpipe-bar-des/3, models:/galpipe-bar-des@champion) or "
                              "an alias of every task's model (champion); repeat for several")
    where = predict.add_mutually_exclusive_group(required=True)
    where.add_argument("--folder", help="a folder of cutouts; object ids are the file names")
    where.add_argument("--catalog", help="a CSV or Parquet catalogue with an id and an image-path column")
    predict.add_argument("--id-column", default="object_id", help="(with --catalog) default: %(default)s")
    predict.add_argument("--image-column", default="image_path", help="(with --catalog) default: %(default)s")
    predict.add_argument("--out", required=True, help="the morphology catalogue to write (.parquet or .csv)")
    predict.add_argument("--threshold", type=float, default=0.5, help="class 1 at p >= this (default %(default)s)")
    predict.add_argument("--batch-size", type=int, default=64,  # galpipe.preprocessing.BATCH_CUTOUTS
                         help="galaxies read and classified together (default %(default)s)")
    predict.add_argument("--threads", type=int, default=None,
                         help="threads that each read and classify a batch (default: one per core; unused with --workers)")
    predict.add_argument("--workers", type=int, default=0,
                         help="processes that read the images instead, while this one classifies (default: none)")
    predict.add_argument("--pixel-scale", type=float, default=None,
                         help="arcsec/pixel of JPEG/PNG cutouts (FITS cutouts carry PIXSCALE)")
    add_project_arguments(predict, "whose models an alias names ")
    predict.add_argument("--tasks", help="tasks an alias expands to (default: the project's)")
    predict.add_argument("--survey", help="survey in the registered names (default: the project's target survey)")
    predict.add_argument("--experiment", help="the experiment whose models an alias names (default: the project's)")
    predict.add_argument("--tracking-uri", default=None,
                         help="default: $MLFLOW_TRACKING_URI, else the project's sqlite:///mlruns/mlflow.db")
    predict.set_defaults(func=_predict)

    from galpipe.ui import add_arguments

    ui = commands.add_parser("ui", help="start the Dagster and MLflow UIs on 127.0.0.1",
                             description="Start `dagster dev` and `mlflow ui` on 127.0.0.1 for this project "
                                         "and say where to point the browser; Ctrl-C stops them. With "
                                         "$MLFLOW_TRACKING_URI set, its store is shown (a tracking server "
                                         "serves its own UI).")
    add_project_arguments(ui, "whose definitions Dagster loads ")
    add_arguments(ui)
    ui.set_defaults(func=_ui)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as err:
        if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.filename is None:
            raise  # not about a path the user gave (a lost connection, no memory): the traceback is the clue
        print(f"galpipe {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
