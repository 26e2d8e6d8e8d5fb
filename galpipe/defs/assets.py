"""Data assets in lineage order: survey catalogues -> raw cutouts (per survey) -> matched catalogue
-> gallery. Each reads its inputs, calls the library and records what it did."""

import time
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetKey, MaterializeResult, MetadataValue, asset

from galpipe.catalogs import class_balance
from galpipe.cutouts import remove_stale_files, validate_manifest
from galpipe.defs.metadata import as_table, image_md
from galpipe.defs.resources import GalpipeSettings
from galpipe.gallery import make_gallery, pick_gallery_galaxies
from galpipe.labels import LabelFolder, scan_label_folder
from galpipe.matching import attach_cutouts, build_matched_catalog

ROLES = ("source", "target")
SURVEYS_GROUP = "surveys"


def _survey(context, role: str):
    return getattr(context.resources, f"{role}_survey")


def survey_assets(role: str):
    """The `catalog` and `raw_cutouts` assets of the source or the target survey."""

    @asset(key=AssetKey(f"{role}_catalog"), group_name=SURVEYS_GROUP,
           required_resource_keys={"settings", f"{role}_survey"},
           description=f"The {role} survey's catalogue: object_id, ra_deg, dec_deg, labels if any.")
    def catalog(context: AssetExecutionContext) -> pd.DataFrame:
        settings: GalpipeSettings = context.resources.settings
        survey = _survey(context, role)
        table = survey.load_catalog(settings.get_profile())
        # Per task, the objects without a label (e.g. a Galaxy Zoo question never asked of them): the
        # catalogue keeps them, and what trains on fewer says so here.
        unlabelled = {task: int(table[task].isna().sum()) for task in settings.tasks if task in table}
        for task, n in unlabelled.items():
            if n:
                context.log.info(f"{role} catalogue: {n} of {len(table)} objects have no {task} label")
        context.add_output_metadata({"n_objects": len(table), **{f"n_unlabelled_{t}": n for t, n in unlabelled.items()},
                                     "tasks_without_labels": ", ".join(t for t in settings.tasks if t not in table),
                                     "source_kind": survey.kind,
                                     "survey": survey.name, "preview": as_table(table.iloc[:, :6], rows=5)})
        return table

    @asset(key=AssetKey(f"{role}_raw_cutouts"), group_name=SURVEYS_GROUP,
           ins={"catalog": AssetIn(key=AssetKey(f"{role}_catalog"))},
           required_resource_keys={"settings", f"{role}_survey"},
           description=f"A cutout of every {role} galaxy, all bands: stacks of FITS cutouts for the surveys galpipe "
                       "renders, the files as they are for folders; the value is the manifest (object_id, path, "
                       "status, reason). Bad cutouts are counted; bad files galpipe downloaded are quarantined.")
    def raw_cutouts(context: AssetExecutionContext, catalog: pd.DataFrame) -> pd.DataFrame:
        settings: GalpipeSettings = context.resources.settings
        survey = _survey(context, role)
        profile = settings.get_profile()
        out_dir = settings.run_dir / role / "cutouts"
        started = time.perf_counter()
        manifest = survey.build_cutouts(catalog, profile, out_dir, settings.workers(), _progress_logger(context, role))
        build_seconds = time.perf_counter() - started
        for row in manifest[manifest.status == "failed"].itertuples():
            context.log.warning(f"{role} {row.object_id}: {row.reason}")
        owned = survey.owns_files()  # only files galpipe made are moved to quarantine or removed
        manifest = validate_manifest(manifest, survey.bands, survey.expected_shape(),
                                     settings.run_dir / role / "quarantine" if owned else None, warn=context.log.warning)
        if owned:
            remove_stale_files(out_dir, manifest)
        context.add_output_metadata(_manifest_metadata(manifest, build_seconds, settings.workers(), out_dir))
        return manifest

    return [catalog, raw_cutouts]


def _progress_logger(context, role: str):
    """A progress callback that logs each tenth of the cutouts to Dagster's log."""
    last_logged = [0]

    def log_progress(done: int, total: int) -> None:
        if done * 10 // total > last_logged[0] or done == total:
            last_logged[0] = done * 10 // total
            context.log.info(f"{role} cutouts: {done}/{total}")

    return log_progress


def _manifest_metadata(manifest: pd.DataFrame, build_seconds: float, workers: int, out_dir: Path) -> dict:
    counts = manifest.status.value_counts()
    metadata = {"n_ok": int(counts.get("ok", 0)), "n_quarantined": int(counts.get("quarantined", 0)),
                "n_failed": int(counts.get("failed", 0)), "build_seconds": round(build_seconds, 1),
                "cutout_dir": str(out_dir)}
    if len(manifest):  # rendered, fetched or listed, as the kind may be
        metadata["cutouts_per_s_per_core"] = round(len(manifest) / build_seconds / workers, 2)
    problems = manifest[manifest.status != "ok"]
    if len(problems):
        metadata["problems"] = as_table(problems[["object_id", "status", "reason"]], rows=20)
    return metadata


@asset(group_name=SURVEYS_GROUP,
       ins={"source_catalog": AssetIn(key=AssetKey("source_catalog")),
            "target_catalog": AssetIn(key=AssetKey("target_catalog")),
            "target_cutouts": AssetIn(key=AssetKey("target_raw_cutouts"))},
       description="The target sample with labels (its own, or carried from the source survey by "
                   "cross-matching) and a fixed split: `pool` for label budgets, `test` never trained on.")
def matched_catalog(context: AssetExecutionContext, settings: GalpipeSettings, source_catalog: pd.DataFrame,
                    target_catalog: pd.DataFrame, target_cutouts: pd.DataFrame) -> pd.DataFrame:
    profile = settings.get_profile()
    labels_folder = scan_label_folder(settings.labels_dir)  # one listing: what is read is what is recorded
    # label_files: each file's stamp and tasks, what the sensor compares with (each file read once)
    new_labels, unread_columns, label_files = labels_folder.read_with_state(settings.tasks)
    table, counts = build_matched_catalog(target_catalog, source_catalog, settings.tasks,
                                          profile.match_radius_arcsec, profile.test_fraction, new_labels)
    counts.update(_warn_of_labels_not_read(context, labels_folder, unread_columns, settings.tasks))
    unknown_ids = counts.pop("new_labels_unknown_ids", [])
    if unknown_ids:
        context.log.warning(f"{counts['n_new_labels_unknown_id']} new label(s) in {settings.labels_dir} name objects "
                            f"the target catalogue lacks, e.g. {unknown_ids[:5]}")
    table = attach_cutouts(table, target_cutouts)
    counts["n_no_cutout"] = int((table.split == "no_cutout").sum())
    context.log.info(f"matched catalogue: {counts}")
    balance = {split: class_balance(table[table.split == split], settings.tasks) for split in ("pool", "test")}
    balance_rows = pd.DataFrame([{"split": split, "task": task, **values}
                                 for split, per_task in balance.items() for task, values in per_task.items()])
    context.add_output_metadata({**counts, "match_radius_arcsec": profile.match_radius_arcsec,
                                 "label_files": MetadataValue.json(label_files),
                                 "class_balance": as_table(balance_rows)})
    return table


def _warn_of_labels_not_read(context, labels_folder: LabelFolder, unread_columns: dict, tasks) -> dict:
    """Name each file of the labels folder that is not read now, and why, and each column of a
    file read that is no task; return how many of each."""
    skipped = labels_folder.skipped()
    for name, reason in skipped.items():
        context.log.warning(f"label file {labels_folder.folder / name} not read: {reason}")
    for name, columns in unread_columns.items():
        context.log.warning(f"label file {labels_folder.folder / name}: column(s) {columns} not read: neither "
                            f"object_id nor one of the project's tasks {list(tasks)}")
    return {"n_label_files_skipped": len(skipped),
            "n_label_columns_not_read": sum(len(columns) for columns in unread_columns.values())}


def project_gallery(context, candidates: pd.DataFrame, source_cutouts: pd.DataFrame, source_catalog: pd.DataFrame,
                    target_catalog: pd.DataFrame, out_path, probabilities: pd.DataFrame | None = None):
    """make_gallery of a few of `candidates` (pick_gallery_galaxies) for the project's two surveys:
    their names, the source cutouts' files and the part of each image the models see. Returns
    the picture's path and how many galaxies it shows."""
    source, target = context.resources.source_survey, context.resources.target_survey
    tasks = context.resources.settings.tasks
    galaxies = pick_gallery_galaxies(candidates, tasks)
    ok_source = source_cutouts[source_cutouts.status == "ok"]
    path = make_gallery(galaxies, dict(zip(ok_source.object_id, ok_source.path)), tasks, out_path, source.name,
                        target.name, probabilities, model_fields={"source": source.model_frame(source_catalog),
                                                                  "target": target.model_frame(target_catalog)})
    return path, len(galaxies)


@asset(group_name=SURVEYS_GROUP,
       ins={"matched_catalog": AssetIn(), "source_cutouts": AssetIn(key=AssetKey("source_raw_cutouts")),
            "source_catalog": AssetIn(key=AssetKey("source_catalog")),
            "target_catalog": AssetIn(key=AssetKey("target_catalog"))},
       required_resource_keys={"settings", "source_survey", "target_survey"},
       description="PNG of the same galaxies as the source and target surveys see them, with labels; a "
                   "dashed square outlines what the models see where that is less than the image.")
def survey_gallery(context: AssetExecutionContext, matched_catalog: pd.DataFrame, source_cutouts: pd.DataFrame,
                   source_catalog: pd.DataFrame, target_catalog: pd.DataFrame) -> MaterializeResult:
    settings: GalpipeSettings = context.resources.settings
    path, n_galaxies = project_gallery(context, matched_catalog, source_cutouts, source_catalog, target_catalog,
                                       settings.run_dir / "gallery.png")
    return MaterializeResult(metadata={"path": str(path), "n_galaxies": n_galaxies,
                                       "gallery": image_md(path)})


ASSETS = [*survey_assets("source"), *survey_assets("target"), matched_catalog, survey_gallery]
