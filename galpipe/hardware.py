"""How models use the machine: the device, the numeric precision, the memory layout, and a
model prepared for inference; and a record of the machine for benchmark results.

Precision "auto" means bf16 autocast where the hardware computes bf16 natively (CPUs with
AMX-BF16 or AVX512-BF16, and CUDA GPUs that support it; fp16 with loss scaling on older GPUs)
and fp32 elsewhere. On a CPU without native bf16, autocast made training 1.3-1.5x slower
(README, Performance), so "auto" does not use it there.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """AMX-BF16 tiles or AVX512-BF16 instructions (torch's own CPU probes)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: str) -> str:
    """The precision "auto" stands for on `device`; an explicit choice is kept."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: str, precision: str):
    """Mixed precision for the forward pass (fp32 needs none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """NHWC layout: oneDNN's and cuDNN's convolutions run faster on it (1.2-1.7x here)."""
    return x.contiguous(memory_format=torch.channels_last)


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """Each Conv2d followed by an (eval-mode) BatchNorm2d in an nn.Sequential becomes one
    convolution with the normalisation folded into its weights, in place."""
    for child in module.children():
        fold_batch_norm(child)
    if isinstance(module, nn.Sequential):
        layers = list(module)
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                layers[i], layers[i + 1] = fuse_conv_bn_eval(layers[i], layers[i + 1]), nn.Identity()
        for i, layer in enumerate(layers):
            module[i] = layer
    return module


def inference_model(model: nn.Module, device: str | None = None) -> nn.Module:
    """A copy of `model` ready for inference: eval mode, batch norm folded into the convolutions,
    channels_last, on `device`. The original is untouched (it may be trained further)."""
    device = device or next(model.parameters()).device.type
    prepared = fold_batch_norm(copy.deepcopy(model).eval())
    return prepared.to(device).to(memory_format=torch.channels_last)


def code_commit() -> str:
    """The code measured: the git commit of galpipe's checkout, where it is one ("unknown" else)."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_info() -> dict:
    """What a benchmark figure was measured on, and with which code."""
    flags = set()
    model_name = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    info = {"cpu": model_name, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "simd_flags": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma"))),
            "native_bf16": cpu_has_native_bf16(), "python": platform.python_version(),
            "torch": torch.__version__, "commit": code_commit()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
