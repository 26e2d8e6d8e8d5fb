"""Batch prediction as an asset: the whole target survey classified by the champions, in chunks
that a backfill spreads over a cluster's workers."""

import hashlib

import numpy as np
import pandas as pd
from dagster import AssetExecutionContext, AssetIn, AssetKey, MaterializeResult, StaticPartitionsDefinition, asset

from galpipe.defs.reevaluation import OPERATIONS_GROUP
from galpipe.defs.resources import GalpipeSettings
from galpipe.prediction import load_classifier, model_uris, predict_cutouts

N_PREDICTION_CHUNKS = 8
prediction_chunks = StaticPartitionsDefinition([f"chunk-{k:02d}" for k in range(N_PREDICTION_CHUNKS)])


def chunk_of(object_ids: pd.Series) -> np.ndarray:
    """A fixed chunk per object id (by hash), so a growing catalogue never moves an object."""
    return np.array([int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:4], "big") % N_PREDICTION_CHUNKS
                     for i in object_ids], dtype=int)


@asset(key=AssetKey("target_morphology"), group_name=OPERATIONS_GROUP, partitions_def=prediction_chunks,
       deps=["evaluation_table"], ins={"raw_cutouts": AssetIn(key=AssetKey("target_raw_cutouts"))},
       required_resource_keys={"settings", "mlflow", "target_survey"},
       description="The whole target survey classified by the champions, one partition per chunk of the "
                   "catalogue (by object-id hash): a backfill over the chunks spreads over a cluster's "
                   "workers. Parquet per chunk: object_id, path, p_<task>, <task>.")
def target_morphology(context: AssetExecutionContext, raw_cutouts: pd.DataFrame) -> MaterializeResult:
    # The chunk's Parquet is this asset's only file: no IO-manager value beside it (a reader
    # would not know which of two files in the folder to take).
    settings: GalpipeSettings = context.resources.settings
    tracker = context.resources.mlflow.tracker(settings)
    chunk = prediction_chunks.get_partition_keys().index(context.partition_key)
    rows = raw_cutouts[(raw_cutouts.status == "ok") & (chunk_of(raw_cutouts.object_id) == chunk)]
    classifiers = [load_classifier(tracker.tracking_uri, uri)
                   for uri in model_uris("champion", settings.tasks, context.resources.target_survey.name,
                                         settings.experiment_name)]
    out = settings.run_dir / "target" / "morphology" / f"{context.partition_key}.parquet"
    summary = predict_cutouts(classifiers, rows[["object_id", "path"]], out, progress=False, check_object_ids=True,
                              on_failure=lambda r: context.log.warning(f"skipped {r['path']}: {r['reason']}"))
    return MaterializeResult(metadata={"path": str(out), "n_written": summary.n_written,
                                       "n_failed": len(summary.failures), "models": [k.model_uri for k in classifiers],
                                       "galaxies_per_second": round(summary.galaxies_per_second, 1)})
