"""CNN architectures, registered by name (`ARCHITECTURES`, `build_model`). Each is a
`GalaxyClassifier`: `features` (convolutions) then `head` (dense layers, the last one the
classifier), so `head_only` fine-tuning can freeze the features and the adaptation strategies
can read the embedding the last layer classifies.

- `ds18`: the network of Dominguez Sanchez et al. (2018, 2019), exactly as published
  (DESIGN.md section 6): about 0.69 GFLOP per 69x69 image.
- `compact`: galpipe's default, a strided CNN with batch normalisation and global pooling,
  about 56 times fewer FLOPs (0.012 against 0.686 GFLOP, from `count_flops`).
- `resnet18`: torchvision's ResNet-18 blocks with a stem for 69x69 galaxies (one 3x3 convolution,
  no max pooling, as small-image ResNets do), `width` channels in the first stage (64 as published).
- `resnet18_w32`: the same at width 32 with a stride-2 stem (0.37 GFLOP), for training on CPUs.

`SeedEnsemble` (not an architecture to train) averages trained networks of one architecture,
a strategy's seeds, into the one model a champion serves.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from galpipe.registry import Registry

INPUT_SHAPE = (3, 69, 69)
ARCHITECTURES: Registry[type[GalaxyClassifier]] = Registry("architecture")


class GalaxyClassifier(nn.Module):
    """What every architecture provides: `features`, `head` (ending in the classifying layer),
    logits from `forward`, and the constructor arguments that rebuild it (`arguments`)."""

    features: nn.Module
    head: nn.Sequential

    def forward(self, x):
        """Logits (apply a sigmoid for the probability, as the paper's last layer does)."""
        return self.head(self.features(x)).squeeze(-1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation the last linear layer classifies (64 numbers for compact and ds18, 8 x width for the ResNets)."""
        return self.head[:-1](self.features(x))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.head[-1](embedding).squeeze(-1)

    def batch_norm_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def arguments(self) -> dict:
        """What the constructor needs to build this network again (see save_model_files)."""
        return {}


@ARCHITECTURES.register("ds18")
class DS18(GalaxyClassifier):
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


def _conv_bn(c_in, c_out, stride):
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


@ARCHITECTURES.register("compact")
class Compact(GalaxyClassifier):
    def __init__(self, width: int = 16):
        super().__init__()
        self.width = width
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

    def arguments(self) -> dict:
        return {"width": self.width}


@ARCHITECTURES.register("resnet18")
class ResNet18(GalaxyClassifier):
    def __init__(self, width: int = 64, stem_stride: int = 1):
        # Imported here: torchvision.models loads every model and torch._dynamo (1.3 s), which each
        # Dagster run process would pay at start whatever its architecture.
        from torchvision.models.resnet import BasicBlock

        super().__init__()
        self.width, self.stem_stride = width, stem_stride
        layers = [nn.Conv2d(3, width, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
        for stage in range(4):  # two basic blocks per stage; stages 2-4 halve the size and double the width
            out, stride = width * 2 ** stage, 1 if stage == 0 else 2
            shortcut = None if stride == 1 and channels == out else nn.Sequential(
                nn.Conv2d(channels, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            layers += [BasicBlock(channels, out, stride, shortcut), BasicBlock(out, out)]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(channels, 1))

    def arguments(self) -> dict:
        return {"width": self.width, "stem_stride": self.stem_stride}


@ARCHITECTURES.register("resnet18_w32")
class ResNet18W32(ResNet18):
    """The ResNet-18 that fits a CPU: width 32 and a stride-2 stem, 0.37 GFLOP per image against the
    published 5.4 (the one bench/learners.py compared on the real spirals)."""

    def __init__(self, width: int = 32, stem_stride: int = 2):
        super().__init__(width, stem_stride)


def build_model(name: str, seed: int | None = None, **arguments) -> GalaxyClassifier:
    """A freshly initialised network; with `seed`, the same weights every time (the global
    random state is left as it was)."""
    architecture = ARCHITECTURES.get(name)
    if seed is None:
        return architecture(**arguments)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return architecture(**arguments)


SEED_ENSEMBLE = "seed_ensemble"  # the architecture name a SeedEnsemble's file gives


def architecture_name(model: nn.Module) -> str:
    """The name `model` is built by again (ARCHITECTURES, or SEED_ENSEMBLE)."""
    if isinstance(model, SeedEnsemble):
        return SEED_ENSEMBLE
    name = next((n for n in ARCHITECTURES if type(model) is ARCHITECTURES.get(n)), None)
    if name is None:
        raise ModelFileError(f"{type(model).__name__} is not a registered architecture ({ARCHITECTURES.names()})")
    return name


class SeedEnsemble(nn.Module):
    """Trained networks of one architecture (e.g. one strategy's seeds) as one classifier whose
    probability is the mean of theirs: models that differ only in their random seed make partly
    independent mistakes, so their average is right more often than a typical one of them (the
    README's seed-ensemble table). `forward` gives the logit of that mean, so a sigmoid of it is
    the average probability, as for any galpipe model."""

    def __init__(self, architecture: str, members: int, arguments: dict | None = None):
        super().__init__()
        if members < 1:
            raise ValueError("a seed ensemble needs at least one member")
        self.architecture, self.member_arguments = architecture, dict(arguments or {})
        self.members = nn.ModuleList(build_model(architecture, **self.member_arguments) for _ in range(members))

    @classmethod
    def of(cls, models: list[GalaxyClassifier]) -> SeedEnsemble:
        """An ensemble holding copies of `models`' weights (all of one architecture and size)."""
        if any(isinstance(m, SeedEnsemble) for m in models):
            raise ValueError("a seed ensemble's members are trained networks, not ensembles")
        shapes = {json.dumps([architecture_name(m), m.arguments()], sort_keys=True) for m in models}
        if len(shapes) != 1:
            raise ValueError(f"a seed ensemble's members must share one architecture and its arguments; got {sorted(shapes)}")
        ensemble = cls(architecture_name(models[0]), len(models), models[0].arguments())
        ensemble.load_state_dict({f"members.{k}.{name}": value for k, m in enumerate(models)
                                  for name, value in m.state_dict().items()})
        return ensemble.eval()

    def forward(self, x):
        logits = torch.stack([member(x) for member in self.members])
        # log(mean p) - log(mean (1 - p)) in log space: exact where a probability rounds to 0 or 1.
        return torch.logsumexp(F.logsigmoid(logits), 0) - torch.logsumexp(F.logsigmoid(-logits), 0)

    def arguments(self) -> dict:
        return {"architecture": self.architecture, "members": len(self.members), "arguments": self.member_arguments}


# A model on disk is these two files: tensors in safetensors (a format that holds numbers only)
# and the architecture as JSON. Loading builds the network from galpipe's own code, so a file
# someone replaced can at worst hold wrong weights; a pickle would run whatever it contains.
WEIGHTS_FILE, ARCHITECTURE_FILE = "weights.safetensors", "architecture.json"


class ModelFileError(ValueError):
    """Model files that cannot be loaded; the message names the file."""


def save_model_files(model: nn.Module, folder) -> tuple[Path, Path]:
    """Write `model` as weights.safetensors + architecture.json in `folder`; returns both paths."""
    name = architecture_name(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights, architecture = folder / WEIGHTS_FILE, folder / ARCHITECTURE_FILE
    # contiguous: channels_last weights are strided views, which safetensors does not store
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(weights))
    architecture.write_text(json.dumps({"architecture": name, "arguments": model.arguments()}))
    return weights, architecture


def load_model_files(weights, architecture) -> nn.Module:
    """The network saved by save_model_files, in eval mode on the CPU."""
    try:
        spec = json.loads(Path(architecture).read_text())
        arguments = spec.get("arguments", {})
        model = SeedEnsemble(**arguments) if spec["architecture"] == SEED_ENSEMBLE \
            else build_model(spec["architecture"], **arguments)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelFileError(f"{architecture}: not a galpipe architecture file ({type(err).__name__}: {err})") from None
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except Exception as err:  # safetensors raises its own error types for a damaged file
        raise ModelFileError(f"{weights}: cannot load the weights of {spec['architecture']} "
                             f"({type(err).__name__}: {err})") from None
    return model.eval()


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
