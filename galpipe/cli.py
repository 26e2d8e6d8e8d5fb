"""The `galpipe` command: `galpipe run` materializes the asset graph in-process against the
project's Dagster instance (DAGSTER_HOME), partition by partition, so the runs appear in
`dagster dev` afterwards, and prints the evaluation table."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from galpipe.profiles import DEFAULT_PROFILE, PROFILES


def _run(args) -> int:
    os.environ["GALPIPE_PROFILE"] = args.profile
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    dagster_home.mkdir(parents=True, exist_ok=True)
    from dagster import AssetKey, AssetSelection, DagsterInstance, MultiPartitionKey, materialize

    from galpipe.defs.checks import CHECKS
    from galpipe.definitions import ALL_ASSETS, build_resources
    from galpipe.profiles import get_profile
    from galpipe.simulation.population import TASKS

    profile = get_profile(args.profile)
    resources = build_resources(args.profile)
    everything = [*ALL_ASSETS, *CHECKS]
    model_keys = {AssetKey("pretrained_model"), AssetKey("finetuned_models"), AssetKey("evaluation_table")}
    data_keys = [key for a in ALL_ASSETS for key in a.keys if key not in model_keys]
    # One Dagster run per partition, in lineage order, as `dagster dev` would launch them.
    steps = [("data", AssetSelection.assets(*data_keys), None)]
    steps += [(f"pretrained_model[{t}]", AssetSelection.assets("pretrained_model"), t) for t in TASKS]
    steps += [(f"finetuned_models[{t}|{b}]", AssetSelection.assets("finetuned_models"),
               MultiPartitionKey({"task": t, "budget": b})) for t in TASKS for b in profile.label_budgets]
    steps += [("evaluation_table", AssetSelection.assets("evaluation_table"), None)]
    started = time.perf_counter()
    failed = []
    with DagsterInstance.get() as instance:
        for label, selection, partition in steps:
            step_started = time.perf_counter()
            result = materialize(everything, selection=selection, partition_key=partition, instance=instance,
                                 resources=resources, raise_on_error=False)
            print(f"[galpipe run] {label}: {'ok' if result.success else 'FAILED'} "
                  f"({time.perf_counter() - step_started:.1f} s)", flush=True)
            for evaluation in result.get_asset_check_evaluations():
                print(f"  check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}: "
                      f"{'passed' if evaluation.passed else 'FAILED'}")
            if not result.success:
                failed.append(label)
                if label == "data":
                    break
    seconds = time.perf_counter() - started
    print(f"\ngalpipe run --profile {args.profile}: {'succeeded' if not failed else 'FAILED: ' + ', '.join(failed)} "
          f"in {seconds:.1f} s (DAGSTER_HOME={dagster_home})")
    table = resources["settings"].run_dir / "evaluation_table.parquet"
    if not failed and table.is_file():
        import pandas as pd

        summary = pd.read_parquet(table)
        print(summary[["task", "label_budget", "strategy", "n_seeds", "accuracy_mean", "accuracy_std",
                       "completeness_1_mean", "purity_1_mean", "roc_auc_mean"]].round(3).to_string(index=False))
    return 0 if not failed else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="galpipe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialize every asset of the profile")
    run.add_argument("--profile", default=os.environ.get("GALPIPE_PROFILE", DEFAULT_PROFILE),
                     choices=sorted(PROFILES), help="size of the simulated surveys (default: %(default)s)")
    run.set_defaults(func=_run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
