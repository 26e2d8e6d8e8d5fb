"""Why the simulation-trained model ranks real spirals below chance: simple cues of each model
input (brightness in rings, size, shape, colour, noise), how well each tells spirals apart in the
simulated SDSS and in the real GZ2 pool, and which of them the simulation-trained network follows
on the real galaxies.

The real galaxies are those of the labelled *pool* only (matched_catalog's split "pool"), never
the test galaxies the README reports. The network is `compact` with gz2_spirals' learner
(one-cycle AdamW at 3e-3, galaxy augmentation, balanced loss), trained on 80% of the simulated
SDSS galaxies for `--epochs` (the project pretrains up to 100, with early stopping), per seed,
then again on "colour-matched" inputs: each colour plane scaled so that the median centre colour
of the simulated galaxies is that of the real images (their pixels only, no label).

    .venv/bin/python bench/realism/transfer_cues.py /tmp/gz2/data/gz2_spirals --out bench/results/transfer_cues

(bench/results/transfer_cues came from a run of bench/learners_real/gz2_spirals_self_training.yaml,
whose inputs are gz2_spirals'.) The table's AUCs are of the weights with the best simulated
validation loss, which a network keeps; the per-epoch list is of each epoch's own weights.

Writes `<out>.json` and `<out>.md`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is not part of the package

from bench.realism.spiral_statistics import labelled_inputs  # noqa: E402
from galpipe.hardware import machine_info  # noqa: E402
from galpipe.models import build_model  # noqa: E402
from galpipe.preprocessing import MODEL_INPUT_PIXELS  # noqa: E402
from galpipe.training import TrainConfig, predict_proba, train_classifier  # noqa: E402

SKY_PX, CENTRE_PX = 28, 8  # the sky is measured beyond SKY_PX, the centre's colour within CENTRE_PX
_Y, _X = np.mgrid[:MODEL_INPUT_PIXELS, :MODEL_INPUT_PIXELS] - MODEL_INPUT_PIXELS // 2
_RADIUS = np.hypot(_X, _Y)


def cues(inputs: np.ndarray) -> pd.DataFrame:
    """One row of cues per (n, 3, 69, 69) colour input."""
    brightness = inputs.mean(axis=1)
    sky = np.median(brightness[:, _RADIUS >= SKY_PX], axis=1)
    light = np.clip(brightness - sky[:, None, None], 0, None)  # above the sky
    weight = light / np.maximum(light.sum(axis=(1, 2), keepdims=True), 1e-12)
    mx, my = (weight * _X).sum(axis=(1, 2)), (weight * _Y).sum(axis=(1, 2))
    dx, dy = _X - mx[:, None, None], _Y - my[:, None, None]
    xx, yy, xy = ((weight * d).sum(axis=(1, 2)) for d in (dx * dx, dy * dy, dx * dy))
    spread = np.sqrt(np.maximum((xx - yy) ** 2 / 4 + xy**2, 0))
    major, minor = (xx + yy) / 2 + spread, np.maximum((xx + yy) / 2 - spread, 0)
    enclosed = np.stack([light[:, _RADIUS < r].sum(axis=1) for r in range(1, 35)], axis=1)
    enclosed /= np.maximum(light[:, _RADIUS < 34].sum(axis=1, keepdims=True), 1e-12)
    ring = lambda lo, hi: brightness[:, (_RADIUS >= lo) & (_RADIUS < hi)].mean(axis=1)  # noqa: E731
    blue_over_red = lambda lo, hi: ((inputs[:, 2][:, (_RADIUS >= lo) & (_RADIUS < hi)].mean(axis=1) + 1e-3)  # noqa: E731
                                    / (inputs[:, 0][:, (_RADIUS >= lo) & (_RADIUS < hi)].mean(axis=1) + 1e-3))
    sky_noise = brightness[:, _RADIUS >= SKY_PX].std(axis=1)
    laplacian = 4 * brightness[:, 1:-1, 1:-1] - brightness[:, :-2, 1:-1] - brightness[:, 2:, 1:-1] \
        - brightness[:, 1:-1, :-2] - brightness[:, 1:-1, 2:]
    inner = _RADIUS < 15
    return pd.DataFrame({
        "brightness, centre (r < 3 px)": ring(0, 3),
        "brightness, 3-8 px": ring(3, 8),
        "brightness, 8-15 px": ring(8, 15),
        "brightness, 15-25 px": ring(15, 25),
        "brightness, edge (25-34 px)": ring(25, 34),
        "radius of half the light (px)": (enclosed < 0.5).sum(axis=1) + 1,
        "radius of 90% of the light (px)": (enclosed < 0.9).sum(axis=1) + 1,
        "axis ratio (second moments)": np.sqrt(minor / np.maximum(major, 1e-12)),
        "light's centre off the image centre (px)": np.hypot(mx, my),
        "asymmetry under a half turn (r < 15 px)": np.abs(brightness - brightness[:, ::-1, ::-1])[:, inner].sum(axis=1)
        / np.maximum(brightness[:, inner].sum(axis=1), 1e-12),
        "blue / red, centre (r < 3 px)": blue_over_red(0, 3),
        "blue / red, 3-8 px": blue_over_red(3, 8),
        "blue / red, 8-15 px": blue_over_red(8, 15),
        "sky noise (r >= 28 px)": sky_noise,
        "sky noise's smoothness (its std / its Laplacian's)":
        sky_noise / np.maximum(laplacian[:, _RADIUS[1:-1, 1:-1] >= SKY_PX].std(axis=1), 1e-12),
    })


def labelled(run_dir: Path, role: str, labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    inputs = labelled_inputs(run_dir, role, labels)
    return (np.concatenate([inputs["spirals"], inputs["the rest"]]),
            np.r_[np.ones(len(inputs["spirals"]), int), np.zeros(len(inputs["the rest"]), int)])


def centre_colour(inputs: np.ndarray) -> np.ndarray:
    return np.median(inputs[:, :, _RADIUS < CENTRE_PX].mean(axis=-1), axis=0)


def simulation_model(x: np.ndarray, y: np.ndarray, seed: int, epochs: int, x_real: np.ndarray, y_real: np.ndarray):
    """The network trained on the simulation, its validation AUC there, and after each epoch its
    simulated validation loss and its AUC on the real galaxies (looked at, never used to train or stop)."""
    rows = np.random.default_rng(seed).permutation(len(x))
    validation, train = np.sort(rows[: len(x) // 5]), np.sort(rows[len(x) // 5:])
    config = TrainConfig(max_epochs=epochs, batch_size=64, learning_rate=3e-3, weight_decay=1e-4, seed=seed,
                         augmentation="galaxy", schedule="one_cycle", class_weighting="balanced")
    model = build_model("compact", seed=seed)
    by_epoch = []
    track = lambda record: by_epoch.append(  # noqa: E731
        [round(record["val_loss"], 4), round(roc_auc_score(y_real, predict_proba(model, x_real)), 4)])
    train_classifier(model, x, train, y[train], validation, y[validation], config, on_epoch=track)
    return model, roc_auc_score(y[validation], predict_proba(model, x[validation])), by_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="data/<project> of a gz2_spirals run")
    parser.add_argument("--out", required=True, help="output path without extension")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    source = pd.read_parquet(run_dir / "source" / "catalog.parquet")[["object_id", "spiral"]]
    matched = pd.read_parquet(run_dir / "matched_catalog.parquet")
    pool = matched[matched.split == "pool"][["object_id", "spiral"]]
    (x_sim, y_sim), (x_real, y_real) = labelled(run_dir, "source", source), labelled(run_dir, "target", pool)
    cues_sim, cues_real = cues(x_sim), cues(x_real)
    medians = lambda table, y: [f"{table[c][y == 1].median():.3g} / {table[c][y == 0].median():.3g}" for c in table]  # noqa: E731
    table = pd.DataFrame({
        "simulated: AUC": [roc_auc_score(y_sim, cues_sim[c]) for c in cues_sim],
        "simulated: spirals / the rest (medians)": medians(cues_sim, y_sim),
        "real pool: AUC": [roc_auc_score(y_real, cues_real[c]) for c in cues_real],
        "real pool: spirals / the rest (medians)": medians(cues_real, y_real),
    }, index=cues_sim.columns)
    gains = (centre_colour(x_real) / centre_colour(x_sim)).astype(np.float32)
    variants = {"as rendered": x_sim, "colour-matched": np.clip(x_sim * gains[None, :, None, None], 0, 1)}
    models = []
    for variant, x in variants.items():
        for seed in range(args.seeds):
            started = time.perf_counter()
            model, validation_auc, by_epoch = simulation_model(x, y_sim, seed, args.epochs, x_real, y_real)
            p_sim, p_real = predict_proba(model, x), predict_proba(model, x_real)
            record = {"variant": variant, "seed": seed, "simulated_validation_auc": validation_auc,
                      "by_epoch_simulated_validation_loss_real_pool_auc": by_epoch,
                      "real_pool_auc": roc_auc_score(y_real, p_real),
                      "real_pool_accuracy": float(((p_real > 0.5) == y_real).mean()),
                      "real_pool_mean_probability": float(p_real.mean()), "seconds": time.perf_counter() - started}
            if variant == "as rendered":  # which cues the network follows, on each side
                for name in cues_sim:
                    record[f"rho simulated: {name}"] = spearmanr(p_sim, cues_sim[name])[0]
                    record[f"rho real: {name}"] = spearmanr(p_real, cues_real[name])[0]
            models.append(record)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()
                   if not k.startswith(("rho", "by_epoch"))}, flush=True)
    followed = pd.DataFrame([m for m in models if m["variant"] == "as rendered"])
    for side in ("simulated", "real"):
        table[f"network's score vs cue, {side} (Spearman, mean of the as-rendered seeds)"] = [
            followed[f"rho {side}: {c}"].mean() for c in table.index]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({
        "run_dir": str(run_dir), "machine": machine_info(), "n_simulated": len(y_sim), "n_real_pool": len(y_real),
        "colour_gains_rgb": gains.tolist(), "cues": table.reset_index(names="cue").to_dict(orient="records"),
        "models": models}, indent=1, default=float))
    lines = [f"Simulated SDSS: {len(y_sim)} galaxies ({y_sim.mean():.0%} spiral); real GZ2 pool: {len(y_real)} "
             f"({y_real.mean():.0%} spiral). AUC: how well the cue alone ranks spirals above the rest (0.5: not at all; "
             "below 0.5: spirals have less of it).", "",
             "| cue | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    for cue, row in table.iterrows():
        lines.append(f"| {cue} | " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    lines += ["", f"`compact` trained on the simulated SDSS ({args.epochs} epochs), applied to the real pool "
                  f"(colour gains R, G, B: {', '.join(f'{g:.2f}' for g in gains)}):", "",
              "| inputs | seed | simulated validation AUC | real pool AUC | real pool accuracy "
              "| mean probability on the real pool |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {m['variant']} | {m['seed']} | {m['simulated_validation_auc']:.3f} | {m['real_pool_auc']:.3f} | "
              f"{m['real_pool_accuracy']:.3f} | {m['real_pool_mean_probability']:.3f} |" for m in models]
    lines += ["", "The real pool's AUC as the network learns the simulation (epochs 1, 2, 3, 5, 10, 20, ..., last; "
                  "the simulated validation loss in brackets):", ""]
    shown = sorted({0, 1, 2, 4, *range(9, args.epochs, 10), args.epochs - 1} & set(range(args.epochs)))
    for m in models:
        curve = m["by_epoch_simulated_validation_loss_real_pool_auc"]
        lines.append(f"- {m['variant']}, seed {m['seed']}: " + ", ".join(
            f"{curve[e][1]:.2f} ({curve[e][0]:.2f})" for e in shown if e < len(curve)))
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
