"""CNN architectures, selectable by name. Each has `features` (convolutions) and `head`
(dense layers), so `head_only` fine-tuning can freeze the features.

- `ds18`: the network of Dominguez Sanchez et al. (2018, 2019), exactly as published
  (DESIGN.md section 6): about 0.69 GFLOP per 69x69 image.
- `compact`: galpipe's default, a strided CNN with batch normalisation and global pooling,
  about 56 times fewer FLOPs (0.012 against 0.686 GFLOP, from `count_flops`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

INPUT_SHAPE = (3, 69, 69)


class DS18(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 6, padding="same"), nn.ReLU(), nn.Dropout(0.5),
            nn.Conv2d(32, 64, 5, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
            nn.Conv2d(64, 128, 2, padding="same"), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
            nn.Conv2d(128, 128, 3, padding="same"), nn.ReLU(), nn.Dropout(0.25),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(128 * 17 * 17, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 1))

    def forward(self, x):
        """Logits (apply a sigmoid for the probability, as the paper's last layer does)."""
        return self.head(self.features(x)).squeeze(-1)


def _conv_bn(c_in, c_out, stride):
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class Compact(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(3, width // 2, 2),        # 35x35
            *_conv_bn(width // 2, width, 1),
            *_conv_bn(width, width, 2),         # 18x18
            *_conv_bn(width, 2 * width, 1),
            *_conv_bn(2 * width, 2 * width, 2),  # 9x9
            *_conv_bn(2 * width, 4 * width, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * width, 1))

    def forward(self, x):
        return self.head(self.features(x)).squeeze(-1)


ARCHITECTURES = {"ds18": DS18, "compact": Compact}


def build_model(name: str, seed: int | None = None) -> nn.Module:
    """A freshly initialised network; with `seed`, the same weights every time (the global
    random state is left as it was)."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    if seed is None:
        return ARCHITECTURES[name]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ARCHITECTURES[name]()


def count_flops(model: nn.Module) -> int:
    """Forward FLOPs for one 69x69 image (a multiply-add counts 2)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *INPUT_SHAPE))
    model.train(was_training)
    return int(counter.get_total_flops())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
