"""How far a simulated sky's cues are from the real pool's, without training anything: for each of
transfer_cues.py's 15 simple cues of the model inputs, how well it alone ranks spirals (ROC AUC)
among simulated SDSS galaxies and among the real galaxies of the labelled *pool* (never the test
galaxies the README reports). A cue whose AUC differs between the two is one a network trained on
the simulation can learn and then follow the wrong way on real galaxies. Each variant is the
project's sky with some keys changed (a JSON object), rendered afresh: no run is needed.

    .venv/bin/python bench/realism/cue_gap.py bench/realism/central_half_plus_neighbours_seeing.yaml \\
        --variant 'as is={}' --variant 'irregular arms={"irregular_arms": true}' \\
        --out bench/results/cue_gap_irregular_arms

`--sample VARIANT=PATH` also writes a bench/learners.py sample (the project's whole simulated
source, as that variant renders it, and the real pool in the order of `learners.py --export`), so
that the variant's direct transfer can be measured on the development split.
Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from bench.learners import quantise  # noqa: E402
from bench.realism.transfer_cues import centre_colour, cues  # noqa: E402
from galpipe.matching import assign_split  # noqa: E402
from galpipe.project import Project, load_project  # noqa: E402
from galpipe.simulation.population import SkyConfig  # noqa: E402


def inputs_of(survey, catalog: pd.DataFrame, profile, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The model inputs of `catalog`'s galaxies as the project makes them, and which rows made one."""
    manifest = survey.build_cutouts(catalog, profile, folder, n_workers=2)
    index = survey.build_model_inputs(catalog, manifest, folder / "inputs.npy", profile)
    index = index.set_index("object_id").loc[catalog.object_id]
    ok = (index.status == "ok").to_numpy()
    return np.load(folder / "inputs.npy")[index.row.to_numpy()[ok]], ok


def real_pool(project: Project, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The labelled pool's model inputs and labels, in catalogue order (learners.py's order)."""
    profile, target = project.profile, project.target
    catalog = target.load_catalog(profile)
    catalog = catalog[(assign_split(catalog.object_id, profile.test_fraction) == "pool").to_numpy()]
    with tempfile.TemporaryDirectory(prefix="galpipe-cue-gap-") as folder:
        x, ok = inputs_of(target, catalog, profile, Path(folder))
    return x, catalog[task].to_numpy()[ok]


def simulated(project: Project, sky: dict, task: str, n_each: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The simulated source with the sky changed by `sky`: `n_each` galaxies of each class (all with None)."""
    profile = dataclasses.replace(project.profile, sky=dataclasses.replace(project.profile.sky, **sky))
    catalog = project.source.load_catalog(profile)
    if n_each:
        catalog = pd.concat([catalog[catalog[task] == k].sample(min(n_each, int((catalog[task] == k).sum())),
                                                                random_state=0) for k in (1, 0)])
    with tempfile.TemporaryDirectory(prefix="galpipe-cue-gap-") as folder:
        x, ok = inputs_of(project.source, catalog, profile, Path(folder))
    return x, catalog[task].to_numpy()[ok]


def column(x: np.ndarray, y: np.ndarray) -> dict:
    """The galaxies, their median centre colour and each cue's ROC AUC for the label."""
    table = cues(x)
    return {"n": len(y), "centre_rgb": [round(float(v), 3) for v in centre_colour(x)],
            "auc": {name: round(float(roc_auc_score(y, table[name])), 3) for name in table}}


def named(values: list[str], option: str, parser: argparse.ArgumentParser) -> dict[str, str]:
    """NAME=VALUE arguments as a mapping; a value without its name ends with the option named."""
    pairs = {}
    for value in values:
        name, separator, rest = value.partition("=")
        if not separator or not name:
            parser.error(f"{option} {value!r}: give NAME=VALUE")
        pairs[name] = rest
    return pairs


def sky_changes(name: str, text: str, parser: argparse.ArgumentParser) -> dict:
    """A variant's sky keys (a JSON object of SkyConfig fields), or an error naming the variant."""
    try:
        changes = json.loads(text)
    except json.JSONDecodeError as error:
        parser.error(f"--variant {name}: not JSON ({error})")
    if not isinstance(changes, dict):
        parser.error(f"--variant {name}: give a JSON object of sky keys, not {text!r}")
    unknown = set(changes) - {field.name for field in dataclasses.fields(SkyConfig)}
    if unknown:
        parser.error(f"--variant {name}: unknown sky keys {sorted(unknown)}")
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project")
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=JSON",
                        help="a name and the sky keys it changes, e.g. 'arms={\"irregular_arms\": true}'")
    parser.add_argument("--task", default="spiral")
    parser.add_argument("--n", type=int, default=250, help="simulated galaxies of each class for the cues")
    parser.add_argument("--sample", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args()
    project = load_project(args.project)
    if project.profile.input_mode != "colour":
        parser.error(f"{args.project}: the cues are of colour inputs; this project's are {project.profile.input_mode}")
    variants = {name: sky_changes(name, text, parser) for name, text in named(args.variant, "--variant", parser).items()}
    samples = named(args.sample, "--sample", parser)
    unknown = set(samples) - set(variants)
    if unknown:
        parser.error(f"--sample names no --variant: {sorted(unknown)}")
    real_x, real_y = real_pool(project, args.task)
    results = {"project": args.project, "n_each": args.n, "columns": {"real pool": column(real_x, real_y)}}
    for name, sky in variants.items():
        x, y = simulated(project, sky, args.task, args.n)
        results["columns"][name] = {"sky": sky, **column(x, y)}
        if name in samples:
            source_x, source_y = simulated(project, sky, args.task, None)
            np.savez_compressed(samples[name], pool_x=quantise(real_x), pool_y=real_y.astype(np.int64),
                                source_x=quantise(source_x), source_y=source_y.astype(np.int64))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=1))
    names = list(results["columns"])
    lines = [f"Cues of `{args.project}`'s model inputs: each cue's ROC AUC for `{args.task}`, real pool and simulated "
             f"SDSS ({args.n} galaxies of each class) side by side.", "",
             "| cue | " + " | ".join(f"{n} ({results['columns'][n]['n']})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for cue in results["columns"]["real pool"]["auc"]:
        lines.append(f"| {cue} | " + " | ".join(str(results["columns"][n]["auc"][cue]) for n in names) + " |")
    lines.append("| centre R, G, B (median) | " + " | ".join(", ".join(map(str, results["columns"][n]["centre_rgb"]))
                                                        for n in names) + " |")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
