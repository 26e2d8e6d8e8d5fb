"""The same training on two machines: is it the same model? Trains galpipe's default network in
fp32 on the CPU (2 threads, fixed seed, 8 epochs) on 1,200 simulated galaxies of a
bench/learners.py sample and prints a digest of its probabilities on 300 others, and their
largest difference from a reference file, so that one run here and one on another machine say
whether, and by how much, fp32 training differs.

    .venv/bin/python bench/training_fingerprint.py bench/learners_sample.npz --save here.npy
    python3 bench/training_fingerprint.py bench/learners_sample.npz --compare here.npy   # elsewhere
"""

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from galpipe.hardware import machine_info  # noqa: E402
from galpipe.models import build_model  # noqa: E402
from galpipe.training import TrainConfig, predict_proba, train_classifier  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("sample")
parser.add_argument("--save")
parser.add_argument("--compare")
args = parser.parse_args()
torch.set_num_threads(2)
data = np.load(args.sample)
# The simulated source galaxies: a task the network learns in a few epochs, so that the model
# compared is not a constant (on 240 real spirals it stayed at one probability for all).
rows = np.sort(np.random.default_rng(0).permutation(len(data["source_y"]))[:1500])
x, y = data["source_x"][rows].astype(np.float32) / 255, data["source_y"][rows]
model = build_model("compact", seed=0)
train_classifier(model, x, np.arange(1000), y[:1000], np.arange(1000, 1200), y[1000:1200],
                 TrainConfig(max_epochs=8, patience=8, batch_size=64, seed=0, device="cpu", precision="fp32",
                             class_weighting="balanced"))
p = predict_proba(model, x[1200:], device="cpu")
y = y[1200:]
info = machine_info()
print(f"{info['cpu']} ({info['cpu_capability']}, torch {info['torch']}): digest "
      f"{hashlib.sha256(p.tobytes()).hexdigest()[:16]}, accuracy {((p >= 0.5) == y).mean():.3f}, "
      f"probabilities {p.min():.3f}-{p.max():.3f}")
if args.save:
    np.save(args.save, p)
if args.compare:
    reference = np.load(args.compare)
    print(f"largest |p - reference| {np.abs(p - reference).max():.3g}; decisions differ for "
          f"{int(((p >= 0.5) != (reference >= 0.5)).sum())} of {len(p)}")
