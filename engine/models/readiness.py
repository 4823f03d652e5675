"""What can be said about a model before anyone waits for it: whether its weights can be had here, and whether this
machine can run it at a usable speed. Cheap checks only (the local cache and the device), nothing is loaded."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..catalog import ModelSpec
from ..errors import ModelLoadError

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


_answers: dict[tuple[str, str | None], tuple[tuple, bool]] = {}  # (source, revision) -> (cache stamp, in the cache)


def _cache_stamp(source: str) -> tuple:
    """Changes whenever the model's Hub cache folder gains or loses a revision, a ref or a snapshot's file (stats of
    a few folders, nothing read); the page asks for the model's state twice a second per open page."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{source.replace('/', '--')}"
    stamp: list = [str(repo)]
    for folder in (repo, repo / "refs", repo / "snapshots"):
        try:
            stamp.append((folder.name, folder.stat().st_mtime_ns))
            if folder != repo:
                stamp += sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(folder))
        except OSError:
            stamp.append((folder.name, None))
    return tuple(stamp)


def _cached(spec: ModelSpec) -> bool:
    """Whether the model's model_index.json is in the Hub cache; remembered until that cache folder changes."""
    from huggingface_hub import try_to_load_from_cache

    key, stamp = (spec.source, spec.revision), _cache_stamp(spec.source)
    known = _answers.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    found = isinstance(try_to_load_from_cache(spec.source, "model_index.json", revision=spec.revision), str)
    _answers[key] = (stamp, found)
    return found


def cannot_load(spec: ModelSpec) -> ModelLoadError | None:
    """Why the model cannot load on this machine at all (a Hub model not downloaded while the Hub is off), or None."""
    if spec.tiny or not spec.source or os.path.isdir(spec.source) or not hub_offline():
        return None
    if _cached(spec):
        return None
    return ModelLoadError(
        f"its weights ({spec.source}) are not downloaded and the Hub cannot be reached (HF_HUB_OFFLINE is set)",
        "Connect to the internet and unset HF_HUB_OFFLINE to download them once (tens of GB), pass a local "
        "diffusers folder to --model, or pick a tiny offline model to try the studio",
        spec.id,
    )


def advice(spec: ModelSpec, device: torch.device) -> str:
    """A warning worth reading before the first job ("" when there is none): a real model without a CUDA GPU, or a
    download still to come."""
    notes = []
    if not spec.tiny and device.type != "cuda":
        notes.append(
            f"This machine has no CUDA GPU: {spec.id} would run on the CPU, taking hours for one video and more RAM "
            "than most computers have. Run the studio on a machine with an NVIDIA GPU, or pick a tiny model to "
            "try it here."
        )
    if not spec.tiny and spec.source and not os.path.isdir(spec.source) and not hub_offline() and not _cached(spec):
        notes.append(f"The first job downloads {spec.source} from the Hub (tens of GB; progress shows here).")
    return " ".join(notes)
