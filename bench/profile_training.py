"""Where a galpipe training epoch spends its time: torch.profiler's table of operators (self CPU
time) for one epoch of `train_classifier` on the consolidated array, per architecture. From the
repository root, after `make run`:

    .venv/bin/python bench/profile_training.py --profile small
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from galpipe.models import build_model  # noqa: E402
from galpipe.preprocessing import load_model_inputs  # noqa: E402
from galpipe.training import TrainConfig, train_classifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="small")
    parser.add_argument("--rows", type=int, default=15)
    args = parser.parse_args()
    x = load_model_inputs(ROOT / "data" / args.profile / "target" / "model_inputs_69px.npy")
    for architecture, n_images in (("compact", 1024), ("ds18", 192)):
        y = (np.arange(n_images) % 3 == 0).astype(np.int64)
        n_train = n_images * 7 // 8
        rows = np.arange(n_images)
        config = TrainConfig(max_epochs=1, batch_size=64, seed=0, device="cpu")
        train_classifier(build_model(architecture, seed=0), x, rows[:64], y[:64], rows[64:96], y[64:96], config)
        with profile(activities=[ProfilerActivity.CPU]) as profiler, record_function("train_classifier"):
            train_classifier(build_model(architecture, seed=0), x, rows[:n_train], y[:n_train], rows[n_train:],
                             y[n_train:], config)
        print(f"\n## {architecture}: one epoch, {n_train} images, batch 64, precision {config.precision}\n")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
