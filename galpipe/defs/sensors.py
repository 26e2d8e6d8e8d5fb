"""The sensor that turns new target labels (files in data/<profile>/labels/) into fine-tuning
and evaluation."""

import json

from dagster import (AssetKey, AssetSelection, DefaultSensorStatus, MultiPartitionKey, RunRequest, SensorResult,
                     SkipReason, sensor)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from galpipe.catalogs import CatalogError
from galpipe.defs.resources import GalpipeSettings
from galpipe.labels import fingerprints, tasks_in

FINETUNED, MATCHED = AssetKey("finetuned_models"), AssetKey("matched_catalog")
AFTER_NEW_LABELS = [AssetKey("evaluation_table"), AssetKey("champion_evaluation")]


@sensor(name="new_target_labels", minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING,
        asset_selection=AssetSelection.assets(MATCHED, FINETUNED, *AFTER_NEW_LABELS),
        description="Watches data/<profile>/labels/ for new or changed label files and requests, in "
                    "lineage order, the matched catalogue, the fine-tuning partitions of the tasks they "
                    "label (the profile's budgets), the evaluation table and the champions' re-evaluation.")
def new_target_labels(context, settings: GalpipeSettings):
    seen = json.loads(context.cursor) if context.cursor else {}
    current = fingerprints(settings.labels_dir)
    changed = sorted(name for name, stamp in current.items() if seen.get(name) != stamp)
    if not changed:
        return SkipReason(f"no new or changed label files in {settings.labels_dir}")
    try:
        tasks = sorted({t for name in changed for t in tasks_in(settings.labels_dir / name, settings.tasks)})
    except (CatalogError, OSError) as err:
        return SkipReason(f"cannot read a label file: {err}")  # cursor kept: retried once it is fixed
    if not tasks:
        return SensorResult(skip_reason=f"{changed} hold no column of the tasks {settings.tasks}",
                            cursor=json.dumps(current))
    wanted = {AssetKeyPartitionKey(MATCHED)} | {AssetKeyPartitionKey(key) for key in AFTER_NEW_LABELS}
    wanted |= {AssetKeyPartitionKey(FINETUNED, MultiPartitionKey({"task": t, "budget": b}))
               for t in tasks for b in settings.get_profile().label_budgets}
    # An asset backfill (not plain runs): Dagster launches each partition after what it depends on.
    subset = AssetGraphSubset.from_asset_partition_set(wanted, context.repository_def.asset_graph)
    return SensorResult(run_requests=[RunRequest.for_asset_graph_subset(subset, tags={"galpipe/label_files":
                                                                                      ",".join(changed)})],
                        cursor=json.dumps(current))
