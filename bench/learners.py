"""Which learner for real galaxies? Side by side on the real GZ2 spirals (issue 14): galpipe's
architectures and optimiser settings, each from scratch and pretrained on the simulated SDSS, at
several label budgets and seeds, through galpipe's own `train_classifier`.

Honest by construction: the learner is chosen on a development split *inside* the project's
labelled pool (the pool's galaxies, split once with a fixed seed); the project's test galaxies
are not in the sample at all, so the choice never looks at the galaxies the README reports.

Needs only torch, torchvision, numpy and safetensors (and pandas with --fixmatch), so it runs on a
GPU machine where galpipe's other dependencies are not installed. The sample is made here from a
`gz2_spirals` run (the results in bench/results came from one with each image whole, as
`bench/realism/gz2_spirals_whole_frame.yaml` makes; `bench/learners_real/framing_sample.py`
makes it for other frames):

    .venv/bin/python bench/learners.py --export /path/to/run/data/gz2_spirals bench/learners_sample.npz
    python3 bench/learners.py bench/learners_sample.npz --out results/learners     # on the GPU machine

Writes `<out>.json` (every run, with its probabilities for the judged galaxies) and `<out>.md`
(mean and spread over seeds, per learner, start and budget; and each run scored again on the mean
over the 8 rotations and flips of each image, and the seeds' models averaged), with the machine
and the seconds each learner took.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pandas only where a sample is made, not on the GPU machine's training path
    import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from galpipe.hardware import machine_info  # noqa: E402
from galpipe.models import build_model, count_flops  # noqa: E402
from galpipe.training import AUGMENTATIONS, TrainConfig, predict_proba, train_classifier  # noqa: E402

# name: (architecture, its arguments, TrainConfig settings)
LEARNERS = {
    "compact (paper's Adam, affine)": ("compact", {}, {}),
    "compact, one-cycle, galaxy aug.": ("compact", {}, {"schedule": "one_cycle", "augmentation": "galaxy",
                                                        "learning_rate": 3e-3, "weight_decay": 1e-4}),
    "resnet18 w32 stride 2": ("resnet18_w32", {},
                              {"schedule": "one_cycle", "augmentation": "galaxy", "learning_rate": 2e-3,
                               "weight_decay": 5e-4}),
    "resnet18 w64 stride 1": ("resnet18", {}, {"schedule": "one_cycle", "augmentation": "galaxy",
                                               "learning_rate": 2e-3, "weight_decay": 5e-4}),
}
BUDGETS = "100,300,all"  # all: every galaxy of the development training part
DEV_TEST = 400  # of the pool's galaxies, held out to judge learners


def export(run_dir: Path, out: Path) -> None:
    """The pool's GZ2 galaxies (never its test ones) and the simulated source, as uint8 in [0, 255]."""
    import pandas as pd

    pool = pool_in_array_order(run_dir)
    target = np.load(run_dir / "target" / "model_inputs_69px.npy", mmap_mode="r")
    source = np.load(run_dir / "source" / "model_inputs_69px.npy", mmap_mode="r")
    source_catalog = pd.read_parquet(run_dir / "source" / "catalog.parquet")
    source_index = pd.read_parquet(run_dir / "source" / "model_inputs.parquet")
    labelled = source_index[source_index.status == "ok"].merge(source_catalog[["object_id", "spiral"]], on="object_id")
    np.savez_compressed(out, pool_x=quantise(target[pool.row.to_numpy()]), pool_y=pool.spiral.to_numpy(np.int64),
                        source_x=quantise(source[np.sort(labelled.row.to_numpy())]),
                        source_y=labelled.sort_values("row").spiral.to_numpy(np.int64))
    print(f"{out}: {len(pool)} pool galaxies, {len(labelled)} simulated source galaxies")


def pool_in_array_order(run_dir: Path) -> pd.DataFrame:
    """The labelled pool's galaxies of a gz2_spirals run (matched catalogue rows, with `row` in the
    target's model-input array), in the array's order: the order of every sample's pool."""
    import pandas as pd

    matched = pd.read_parquet(run_dir / "matched_catalog.parquet")
    index = pd.read_parquet(run_dir / "target" / "model_inputs.parquet").set_index("object_id")
    pool = matched[(matched.split == "pool") & (matched.object_id.isin(index.index))]
    return pool.assign(row=index.loc[pool.object_id, "row"].to_numpy()).sort_values("row")


def quantise(images: np.ndarray) -> np.ndarray:
    """Model inputs in [0, 1] as uint8, as samples store them."""
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def accuracy_and_auc(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    n1 = y.sum()
    auc = (ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(y) - n1))
    return float(((p >= 0.5) == y).mean()), float(auc)


def eight_views_proba(model, x: np.ndarray, device: str) -> np.ndarray:
    """p(class 1) averaged over the 8 rotations and flips of each image (a galaxy has no up or
    left, so each is as good an input as the image itself)."""
    views = [np.rot90(x, k, axes=(2, 3)) for k in range(4)]
    views += [v[..., ::-1] for v in views]
    return np.mean([predict_proba(model, np.ascontiguousarray(v), device=device) for v in views], axis=0)


def scored(y: np.ndarray, model, x: np.ndarray, device: str) -> dict:
    """Accuracy and ROC AUC of the image as it is and of its 8 views, with the probabilities
    (for the seed ensembles of markdown())."""
    p, p_views = predict_proba(model, x, device=device), eight_views_proba(model, x, device)
    (accuracy, auc), (accuracy_views, auc_views) = accuracy_and_auc(y, p), accuracy_and_auc(y, p_views)
    return {"accuracy": accuracy, "roc_auc": auc, "accuracy_8_views": accuracy_views, "roc_auc_8_views": auc_views,
            # Significant digits, not decimals: a saturated model's 1e-9 and 1e-12 stay apart (ROC AUC ranks
            # them); 8 keep every float32.
            "p": [float(f"{v:.8g}") for v in p], "p_8_views": [float(f"{v:.8g}") for v in p_views]}


def shrunk(pretrained: dict, fresh: dict, keep: float) -> dict:
    """`keep` x the pretrained weights + (1 - keep) x `fresh`. With the seed's fresh initialisation
    (the weights its pretraining and `scratch` start from) that is the pretraining's update scaled
    back by `keep`: after shrink and perturb (Ash & Adams 2020), for a warm start that generalises
    worse than a fresh one as labels grow. Batch-norm statistics are mixed alike; counters are the
    pretrained ones."""
    return {k: keep * v + (1 - keep) * fresh[k] if v.is_floating_point() else v for k, v in pretrained.items()}


def fit(model, x, rows, y, seed, settings, epochs, device, objective=None):
    """Train on x[rows] with 20% of them for early stopping (as galpipe's fine-tuning does)."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(rows))
    n_val = max(len(rows) // 5, 2)
    val, train = shuffled[:n_val], shuffled[n_val:]
    config = TrainConfig(max_epochs=epochs, patience=10, batch_size=64, seed=seed, device=device,
                         min_steps=40, **settings)
    history = train_classifier(model, x, rows[train], y[train], rows[val], y[val], config, objective=objective)
    return len(history)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sample", nargs="?")
    parser.add_argument("--export", metavar="RUN_DIR", help="write the sample from a gz2_spirals run and stop")
    parser.add_argument("--out", default="bench/results/learners")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed + seeds - 1 (to add seeds to a file, then --merge)")
    parser.add_argument("--learners", help="a subset, separated by ';' (the names hold commas): " + "; ".join(LEARNERS))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--starts", default="scratch,simulation",
                        help="scratch, simulation, shrunk (the simulation's weights shrunk towards a fresh start, "
                             "--keep) or several; 'scratch' alone skips the pretraining")
    parser.add_argument("--keep", type=float,
                        help="for the start 'shrunk': K in [0, 1], the share of the pretraining's update kept "
                             "(default 0.5; 0 is scratch's start, 1 the simulation's)")
    parser.add_argument("--pretrain-augmentation", choices=AUGMENTATIONS,
                        help="the simulation pretraining's augmentation, if not the learner's own "
                             "(e.g. 'survey': the simulated survey randomised)")
    parser.add_argument("--fixmatch", action="store_true",
                        help="fine-tune with FixMatch (galpipe's `fixmatch` strategy): the development training "
                             "galaxies outside the N labelled are its unlabelled images (so not with 'all')")
    parser.add_argument("--label", help="added to each learner's name, e.g. the sample's frame")
    parser.add_argument("--budgets", default=BUDGETS, help=f"label budgets, comma-separated (default {BUDGETS})")
    parser.add_argument("--merge", nargs="+", metavar=("OUT", "RESULTS"),
                        help="write OUT.json/.md with the runs of the RESULTS .json files (one machine) and stop")
    args = parser.parse_args(argv)
    if args.merge:
        out, *inputs = args.merge
        merged = [json.loads(Path(path).read_text()) for path in inputs]
        save(out, merged[0]["device"], merged[0]["dev_train"], [run for m in merged for run in m["runs"]],
             merged[0]["machine"], merged[0].get("dev_test_labels"))
        return 0
    if not args.sample:
        parser.error("give the sample (.npz)")
    starts = args.starts.split(",")
    try:
        budgets = [None if b == "all" else int(b) for b in args.budgets.split(",")]
    except ValueError:
        parser.error(f"--budgets {args.budgets}: give whole numbers or 'all', separated by commas")
    if not set(starts) <= {"scratch", "simulation", "shrunk"}:
        parser.error(f"--starts {args.starts}: give scratch, simulation, shrunk or several of them")
    pretraining = {"simulation", "shrunk"} & set(starts)  # the starts that need the simulation's weights
    if args.pretrain_augmentation and not pretraining:
        parser.error("--pretrain-augmentation is for a start from the simulation: add simulation or shrunk to --starts")
    if args.keep is not None and "shrunk" not in starts:
        parser.error("--keep is for the start 'shrunk': add it to --starts")
    args.keep = 0.5 if args.keep is None else args.keep
    if not 0 <= args.keep <= 1:
        parser.error(f"--keep {args.keep}: give a share between 0 and 1")
    if args.fixmatch and None in budgets:
        parser.error("--fixmatch needs unlabelled galaxies: give budgets below the development training part, not 'all'")
    if args.export:
        export(Path(args.export), Path(args.sample))
        return 0
    if args.fixmatch:  # imported only here: galpipe.adaptation brings pandas, which a GPU machine may lack
        from galpipe.adaptation import Consistency
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = np.load(args.sample)
    pool_x, pool_y = data["pool_x"].astype(np.float32) / 255, data["pool_y"]
    source_x, source_y = data["source_x"].astype(np.float32) / 255, data["source_y"]
    order = np.random.default_rng(2026).permutation(len(pool_y))  # the development split, fixed
    dev_test, dev_train = order[:DEV_TEST], order[DEV_TEST:]
    if any(b is not None and not 0 < b <= len(dev_train) for b in budgets):
        parser.error(f"--budgets {args.budgets}: each between 1 and {len(dev_train)} (or 'all')")
    names = args.learners.split(";") if args.learners else list(LEARNERS)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs = []
    for name in names:
        architecture, arguments, settings = LEARNERS[name]
        suffix = ", ".join(filter(None, [args.label, "FixMatch" if args.fixmatch else ""]))
        label = f"{name} ({suffix})" if suffix else name
        started = time.perf_counter()
        pretrained = {}
        augmentation = args.pretrain_augmentation or settings.get("augmentation", "affine")  # the pretraining's
        for seed in seeds if pretraining else ():  # one pretraining per seed, as the protocol does
            model = build_model(architecture, seed=seed, **arguments)
            fit(model, source_x, np.arange(len(source_y)), source_y, seed, {**settings, "augmentation": augmentation},
                args.epochs, device)
            pretrained[seed] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            runs.append({"learner": label, "start": "simulation", "budget": 0, "seed": seed,
                         "pretraining_augmentation": augmentation,
                         **scored(pool_y[dev_test], model, pool_x[dev_test], device)})
        for budget in budgets:
            for start in starts:
                for seed in seeds:
                    chosen = np.random.default_rng([seed, 7]).permutation(dev_train)[:budget]
                    model = build_model(architecture, seed=seed, **arguments)
                    if start == "simulation":
                        model.load_state_dict(pretrained[seed])
                    elif start == "shrunk":
                        model.load_state_dict(shrunk(pretrained[seed], model.state_dict(), args.keep))
                    # FixMatch's unlabelled images: the development training galaxies not among the N.
                    objective = Consistency(np.setdiff1d(dev_train, chosen)) if args.fixmatch else None
                    epochs = fit(model, pool_x, chosen, pool_y[chosen], seed, settings, args.epochs, device, objective)
                    runs.append({"learner": label, "start": start if start != "shrunk" else f"shrunk {args.keep:g}",
                                 "budget": len(chosen), "seed": seed,
                                 **({} if start == "scratch" else {"pretraining_augmentation": augmentation}),
                                 **(objective.params() if objective else {}),
                                 **scored(pool_y[dev_test], model, pool_x[dev_test], device), "epochs": epochs})
                    print(json.dumps({k: v for k, v in runs[-1].items() if not k.startswith("p")}), flush=True)
                    # A run cut short keeps what it did.
                    results = save(args.out, device, len(dev_train), runs, dev_test_labels=pool_y[dev_test].tolist())
        seconds = time.perf_counter() - started
        runs.append({"learner": label, "seconds": seconds,
                     "gflop_per_image": count_flops(build_model(architecture, **arguments)) / 1e9})
        print(f"{name}: {seconds:.0f} s", flush=True)
        results = save(args.out, device, len(dev_train), runs, dev_test_labels=pool_y[dev_test].tolist())
    print(markdown(results))
    return 0


def save(out: str, device: str, dev_train: int, runs: list[dict], machine: dict | None = None,
         dev_test_labels: list | None = None) -> dict:
    """Write `<out>.json` and `<out>.md` with every run so far (on this machine, unless `machine` says)."""
    results = {"machine": machine or machine_info(), "device": device, "dev_test": DEV_TEST, "dev_train": dev_train,
               "dev_test_labels": dev_test_labels, "runs": runs}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Not with_suffix: an --out such as frame0.5-compact would lose ".5-compact".
    out.with_name(out.name + ".json").write_text(json.dumps(results, indent=1))
    out.with_name(out.name + ".md").write_text(markdown(results))
    return results


def markdown(results: dict) -> str:
    runs = [r for r in results["runs"] if "accuracy" in r]
    costs = {r["learner"]: r for r in results["runs"] if "seconds" in r}
    lines = [f"Development split of the GZ2 pool: {results['dev_train']} to train from, {results['dev_test']} "
             f"to judge; {results['machine'].get('gpu', results['machine']['cpu'])} ({results['device']}).", "",
             "| learner | GFLOP/image | start | N labels | accuracy | ROC AUC | seeds |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["learner"], r["start"], r["budget"]) for r in runs},
                  key=lambda k: (list(costs).index(k[0]) if k[0] in costs else 0, k[2], k[1]))
    for learner, start, budget in keys:
        group = [r for r in runs if (r["learner"], r["start"], r["budget"]) == (learner, start, budget)]
        acc, auc = np.array([r["accuracy"] for r in group]), np.array([r["roc_auc"] for r in group])
        gflop = costs.get(learner, {}).get("gflop_per_image", float("nan"))
        spread = lambda a: a.std(ddof=1) if len(a) > 1 else 0.0  # noqa: E731
        lines.append(f"| {learner} | {gflop:.3f} | {start} | {budget} | {acc.mean():.3f} ± {spread(acc):.3f}"
                     f" | {auc.mean():.3f} ± {spread(auc):.3f} | {len(group)} |")
    scored_runs = [r for r in runs if "p_8_views" in r]
    # Runs since the 8 views were scored; the development test labels are saved with them.
    if scored_runs and results.get("dev_test_labels"):
        y = np.asarray(results["dev_test_labels"])
        lines += ["", "Each image as it is, against the mean over its 8 rotations and flips; and the seeds' "
                      "probabilities averaged (an ensemble of the seeds' models):", "",
                  "| learner | start | N labels | accuracy | accuracy, 8 views | ROC AUC, 8 views | "
                  "seed ensemble | seed ensemble, 8 views |", "|---|---|---|---|---|---|---|---|"]
        for learner, start, budget in keys:
            group = [r for r in scored_runs if (r["learner"], r["start"], r["budget"]) == (learner, start, budget)]
            if not group:
                continue
            mean = lambda key: np.mean([r[key] for r in group])  # noqa: E731
            ensemble = [accuracy_and_auc(y, np.mean([r[key] for r in group], axis=0))[0] for key in ("p", "p_8_views")]
            lines.append(f"| {learner} | {start} | {budget} | {mean('accuracy'):.3f} | {mean('accuracy_8_views'):.3f} | "
                         f"{mean('roc_auc_8_views'):.3f} | {ensemble[0]:.3f} ({len(group)}) | {ensemble[1]:.3f} |")
    lines += ["", "| learner | seconds (all its runs) |", "|---|---|"]
    lines += [f"| {name} | {c['seconds']:.0f} |" for name, c in costs.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
