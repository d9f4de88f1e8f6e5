"""What config.json records besides the settings: package versions, the code's commit, the
machine (CPU, GPU, driver, the linear layers' kernel), the time and the command. Apart from the
run store (compare/core/runstore.py) because it needs torch, and commands that only read the
store (`compare table`, `list`) start without it."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from compare.core.linear import recorded_kernel


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in ("torch", "norse", "sinabs", "gymnasium", "ale-py", "numpy", "minatar"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the code that runs (with '-dirty' if it has local edits), if in a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def hardware() -> dict:
    """The machine a run's numbers hold on: same seed and settings give the same result on the
    same CPU model (or GPU, CUDA and cuDNN), not necessarily on another."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cuda = torch.cuda.is_available()
    return {"cpu": cpu or None, "cpus": os.cpu_count(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "gpu_driver": nvidia_driver_version() if cuda else None, "linear_kernel": recorded_kernel()}


NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")  # what the loaded kernel module reports


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version (torch reports the CUDA it was built with, not the driver)."""
    try:
        text = NVIDIA_DRIVER_FILE.read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


def provenance() -> dict:
    """What config.json records besides the settings: versions, commit, machine, time, command."""
    return {"versions": package_versions(), "python": platform.python_version(),
            "git_commit": git_commit(), "hardware": hardware(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["compare", *sys.argv[1:]])}
