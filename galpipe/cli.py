"""The `galpipe` command: `galpipe run` materializes the asset graph in-process against the
project's Dagster instance (DAGSTER_HOME), so the run appears in `dagster dev` afterwards."""

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
    from dagster import DagsterInstance

    from galpipe.definitions import build_resources, defs

    job = defs.resolve_implicit_global_asset_job_def()
    started = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, resources=build_resources(args.profile),
                                        raise_on_error=False)
    seconds = time.perf_counter() - started
    print(f"\ngalpipe run --profile {args.profile}: {'succeeded' if result.success else 'FAILED'} "
          f"in {seconds:.1f} s (run {result.run_id}, DAGSTER_HOME={dagster_home})")
    for evaluation in result.get_asset_check_evaluations():
        print(f"  check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}: "
              f"{'passed' if evaluation.passed else 'FAILED'}")
    return 0 if result.success else 1


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
