"""The sensor that turns new target labels (files in data/<profile>/labels/) into fine-tuning
and evaluation."""

import json

from dagster import AssetKey, AssetSelection, DefaultSensorStatus, MultiPartitionKey, RunRequest, SensorResult, SkipReason, sensor
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from galpipe.catalogs import CatalogError
from galpipe.defs.resources import GalpipeSettings
from galpipe.labels import LABEL_SETTLE_SECONDS, changed_files_and_tasks, scan_label_folder

FINETUNED, MATCHED = AssetKey("finetuned_models"), AssetKey("matched_catalog")
AFTER_NEW_LABELS = [AssetKey("evaluation_table"), AssetKey("champion_evaluation")]


@sensor(name="new_target_labels", minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        asset_selection=AssetSelection.assets(MATCHED, FINETUNED, *AFTER_NEW_LABELS),
        description="Watches data/<profile>/labels/ for label files that the latest matched_catalog did not "
                    f"use (new, changed or deleted; a file is taken once unchanged for {LABEL_SETTLE_SECONDS:.0f} s, "
                    "names starting with '.' or ending in .part or .tmp never) and requests, in lineage order, "
                    "the matched catalogue, the fine-tuning partitions of the tasks they label (the profile's budgets), the "
                    "evaluation table and the champions' re-evaluation.")
def new_target_labels(context, settings: GalpipeSettings):
    latest = context.instance.get_latest_materialization_event(MATCHED)
    recorded = latest.asset_materialization.metadata.get("label_files") if latest else None
    used = recorded.value if recorded is not None else {}
    try:
        labels_folder = scan_label_folder(settings.labels_dir)
        settling, now = labels_folder.settling, labels_folder.state(settings.tasks, known=used)
    except (CatalogError, OSError) as err:
        return SkipReason(f"cannot read a label file: {err}")  # tried again next tick, once it is fixed
    if settling:  # perhaps still being written; waiting also folds a batch of files into one backfill
        return SkipReason(f"label file(s) {', '.join(p.name for p in settling)} modified less than "
                          f"{LABEL_SETTLE_SECONDS:.0f} s ago; taken once they settle")
    if now == used:
        return SkipReason("matched_catalog already uses every label file")
    if context.cursor and json.loads(context.cursor) == now:
        return SkipReason("already requested; waiting for that backfill to rebuild matched_catalog")
    changed, tasks = changed_files_and_tasks(used, now)
    wanted = {AssetKeyPartitionKey(MATCHED)} | {AssetKeyPartitionKey(key) for key in AFTER_NEW_LABELS}
    wanted |= {AssetKeyPartitionKey(FINETUNED, MultiPartitionKey({"task": t, "budget": b}))
               for t in tasks for b in settings.get_profile().label_budgets}
    # An asset backfill, not plain runs: Dagster launches each partition after what it depends on.
    # AssetGraphSubset is Dagster-internal (pinned in pyproject): check it on an upgrade.
    subset = AssetGraphSubset.from_asset_partition_set(wanted, context.repository_def.asset_graph)
    return SensorResult(run_requests=[RunRequest.for_asset_graph_subset(
        subset, tags={"galpipe/label_files": ",".join(changed)})], cursor=json.dumps(now))
