"""Fail fast when a job asks for a GPU that the worker does not have.

``--device auto`` quietly falls back to the CPU, which is right on a laptop and wrong on a Dataflow GPU worker
whose driver did not install: the job would run for hours at CPU speed. A job that asks for a GPU (``--device
cuda`` / ``cuda:N``, which ``pipeline.dataflow`` sets when ``--gpu_type`` is given) calls ``check_device`` where
the model is loaded, and a missing GPU stops the worker with a message saying what was found.
"""

from __future__ import annotations

import glob
import logging
import os

import torch

_LOG = logging.getLogger(__name__)


def gpu_report() -> str:
    """One line about what this process can see: torch's CUDA state, the visible-device variables, /dev/nvidia*."""
    try:
        available = torch.cuda.is_available()
        count = torch.cuda.device_count()
    except Exception as e:  # a broken driver can raise here instead of returning False
        available, count = f"error ({e})", 0
    names = []
    if available is True:
        names = [torch.cuda.get_device_name(i) for i in range(count)]
    env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES") if k in os.environ}
    return (
        f"torch.cuda.is_available()={available}, torch.cuda.device_count()={count}, devices={names}, "
        f"torch {torch.__version__} built for CUDA {torch.version.cuda}, env={env}, "
        f"/dev/nvidia*={sorted(glob.glob('/dev/nvidia*'))}"
    )


def check_device(device: str) -> str:
    """Returns ``device`` when it can be used; raises ``RuntimeError`` naming what was found when it asks for a
    GPU (``cuda``, ``cuda:N``) that this process cannot see. ``cpu`` (and anything not CUDA) passes unchanged.

    Call it with the *resolved* device (after ``auto`` was turned into ``cuda`` or ``cpu``), in the process that
    loads the model (RunInference's ``load_model``).
    """
    if not str(device).startswith("cuda"):
        return device
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # reported by gpu_report below
        count = 0
    index = 0
    if ":" in str(device):
        suffix = str(device).split(":", 1)[1]
        if not suffix.isdigit():
            raise ValueError(f"--device {device!r}: expected cuda or cuda:N")
        index = int(suffix)
    if count == 0 or index >= count:
        raise RuntimeError(
            f"--device {device} asks for a GPU but this worker has "
            f"{'none' if count == 0 else f'only {count}'}: {gpu_report()}. On Dataflow: check that the job has "
            "--dataflow_service_options=worker_accelerator=type:...;count:...;install-nvidia-driver, a machine type "
            "that takes that GPU, and the CUDA container (docs/dataflow.md). Use --device auto to allow the CPU."
        )
    _LOG.info("GPU check passed for --device %s: %s", device, torch.cuda.get_device_name(index))
    return device
