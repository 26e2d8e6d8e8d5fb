"""Re-evaluating the models in service: each task's `champion` from the MLflow registry, on the
current target test set and on the test galaxies whose labels are new, one MLflow run per task
linked to the model version it evaluated."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from galpipe.evaluation import binary_metrics, plot_roc_curves
from galpipe.labels import new_label_flag
from galpipe.tracking import Tracker, load_registered_model, model_version, with_retry
from galpipe.training import predict_proba
from galpipe.transfer import labelled_sample, require_two_classes


def reevaluate_champions(tracker: Tracker, registered_names: dict[str, str], x,
                         test_rows: pd.DataFrame, inputs_index: pd.DataFrame, plots_dir: Path,
                         tags: dict) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """For each task -> registered model name: the champion's metrics on `test_rows` (the test
    split of the matched catalogue; `x` and `inputs_index` its model inputs).

    Returns the table (one row per task: version, MLflow run, metrics), the probabilities of every
    test galaxy with an input (index object_id, a `p_<task>` column per task) and the ROC data
    {task: (labels, probabilities)}."""
    good = inputs_index[inputs_index.status == "ok"].set_index("object_id").row
    test_ids = [i for i in test_rows.object_id if i in good.index]
    probabilities = pd.DataFrame(index=pd.Index(test_ids, name="object_id"))
    rows, curves = [], {}
    for task, name in registered_names.items():
        version = model_version(tracker.tracking_uri, f"models:/{name}@champion")
        uri = f"models:/{version.name}/{version.version}"
        test = labelled_sample(test_rows, inputs_index, task)
        require_two_classes(test, f"re-evaluating the {task} champion on the target's test split")
        probabilities[f"p_{task}"] = predict_proba(load_registered_model(tracker.tracking_uri, uri),
                                                   x[good[test_ids].to_numpy()])
        curves[task] = (test.label, probabilities.loc[test.object_id, f"p_{task}"].to_numpy())
        metrics = binary_metrics(*curves[task])
        flag = new_label_flag(task)
        new = labelled_sample(test_rows[test_rows[flag]] if flag in test_rows else test_rows.iloc[:0],
                              inputs_index, task)
        params = {"task": task, "model_uri": uri, "n_test": len(test), "n_test_new_labels": len(new)}
        run_tags = {**tags, "galpipe.kind": "reevaluation", "evaluated_model": uri,
                    "evaluated_model_run_id": version.run_id}
        with tracker.run(f"reevaluate-{task}", run_tags, params) as run_id:
            tracker.log_metrics(run_id, {f"test_{k}": v for k, v in metrics.items()})
            if len(new):
                new_metrics = binary_metrics(new.label, probabilities.loc[new.object_id, f"p_{task}"].to_numpy())
                tracker.log_metrics(run_id, {f"new_labels_{k}": v for k, v in new_metrics.items()})
            roc = plot_roc_curves({task: curves[task]}, Path(plots_dir) / f"{run_id}_roc.png",
                                  f"{task} champion, target test")
            tracker.log_artifact(run_id, roc, "plots")
        with_retry(lambda: tracker.client.set_model_version_tag(version.name, version.version,
                                                                "last_reevaluation_run_id", run_id))
        rows.append({"task": task, "registered_model": version.name, "model_version": version.version,
                     "mlflow_run_id": run_id, **metrics, "n_new_labels": len(new)})
    return pd.DataFrame(rows), probabilities, curves
