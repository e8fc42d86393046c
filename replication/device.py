"""Where a run trains and what it ran on: the device a spec's `device` names, and the environment a record
keeps for audit (never part of a run's identity)."""

from __future__ import annotations

import platform
import subprocess

import torch


def resolve_device(name: str) -> torch.device:
    """`auto`: the GPU when there is one, else the CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def environment(device: torch.device) -> dict:
    """What produced a record: torch and Python versions, the platform, the device, threads, the git commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "torch": str(torch.__version__),  # a plain str (TorchVersion is not one a checkpoint may hold)
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "git_commit": commit or None,
    }
