"""LoRAs on the loaded transformers: read a file safely, check that it fits, attach it through diffusers' loader.

diffusers converts the original Wan / ComfyUI key layouts (lora_A/lora_B, lora_down/lora_up with alpha) to its own
in `WanLoraLoaderMixin.lora_state_dict`; the studio only checks the result against the transformer before anything
is attached, because diffusers adds the adapter layers first and checks the shapes after, and only warns about
keys that match no layer.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import RequestError
from ..library.loras import EXPERTS, LoraPick

log = logging.getLogger("wan_studio.adapters")

_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_B.bias")


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file read and checked: its converted tensors and what identifies it."""

    path: Path
    sha256: str
    state_dict: dict[str, torch.Tensor]


def file_key(path: Path) -> tuple[str, int, int]:
    """Identifies a file's content without hashing it again: a changed file gets a new key."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _refuse(name: str, path: Path, why: str) -> RequestError:
    return RequestError("loras", f"The LoRA {name} ({path.name}) cannot be used: {why}.")


def read_lora(name: str, path: Path) -> LoraFile:
    """The file's tensors in diffusers' key layout. Only safetensors is read (a pickle can run code when opened)."""
    from diffusers import WanPipeline
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not path.is_file():
        raise _refuse(name, path, "the file is missing; put it back in the LoRA folder or choose another LoRA")
    data = path.read_bytes()  # read once: hashed for the settings and parsed from the same bytes
    if data[:2] == b"PK" or data[:1] == b"\x80":  # a zip (torch.save) or a raw pickle, whatever its name
        raise _refuse(name, path, "it is a PyTorch pickle, not a safetensors file; get its .safetensors version")
    digest = hashlib.sha256(data).hexdigest()
    try:
        state_dict = load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        log.info("LoRA %s: %s unreadable: %s", name, path, exc)
        why = "it is not a readable safetensors file (damaged, cut short or another format)"
        raise _refuse(name, path, why) from None
    if not state_dict:
        raise _refuse(name, path, "the file holds no tensors")
    if any(not t.is_floating_point() for t in state_dict.values()):
        raise _refuse(name, path, "it holds tensors that are not floating-point weights; it is not a LoRA")
    try:
        converted = WanPipeline.lora_state_dict(state_dict)
    except (ValueError, KeyError, IndexError, RuntimeError) as exc:
        log.info("LoRA %s: diffusers could not convert %s: %s", name, path, exc)
        raise _refuse(name, path, "its key names are not a Wan LoRA layout the studio knows") from None
    return LoraFile(path, digest, converted)


def check_fits(name: str, lora: LoraFile, transformer: torch.nn.Module) -> None:
    """Every key names a linear layer of this transformer, with that layer's shapes. Raises RequestError."""
    unknown: list[str] = []
    ranks: dict[str, int] = {}
    for key, tensor in lora.state_dict.items():
        suffix = next((s for s in _SUFFIXES if key.endswith(s)), None)
        if not key.startswith("transformer.") or suffix is None:
            unknown.append(key)
            continue
        module_path = key[len("transformer.") : -len(suffix)]
        try:
            module = transformer.get_submodule(module_path)
        except AttributeError:
            unknown.append(key)
            continue
        layer = getattr(module, "base_layer", module)  # a layer that already carries an adapter
        if not isinstance(layer, torch.nn.Linear):
            unknown.append(key)
            continue
        if suffix == ".lora_A.weight":
            expected, rank = (tensor.shape[0], layer.in_features), tensor.shape[0]
        elif suffix == ".lora_B.weight":
            expected, rank = (layer.out_features, tensor.shape[1]), tensor.shape[1]
        else:
            expected, rank = (layer.out_features,), None
        if tensor.dim() != len(expected) or tuple(tensor.shape) != expected:
            raise _refuse(
                name,
                lora.path,
                f"its weights for {module_path} have shape {tuple(tensor.shape)}, the model's layer needs "
                f"{expected}: it was made for a different model",
            )
        if rank is not None and ranks.setdefault(module_path, rank) != rank:
            raise _refuse(name, lora.path, f"its two halves for {module_path} disagree on the rank")
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise _refuse(name, lora.path, f"{len(unknown)} of its weights match no layer of the model ({shown})")


class Adapters:
    """The LoRAs attached to one loaded pipeline, changed per job without touching the base weights.

    Adapters a job does not use are deleted, so memory stays bounded; when none is left the adapter layers are
    removed altogether and the transformers compute exactly what they did before any LoRA.
    """

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.attached: dict[tuple[str, tuple], str] = {}  # (expert, file key) -> adapter name
        self.hashes: dict[tuple, str] = {}  # file key -> sha256
        self._count = 0

    def use(self, picks: tuple[LoraPick, ...], report=None) -> list[dict[str, Any]]:
        """Attach exactly these LoRAs (reading and checking every new file before attaching any).

        Returns what the saved settings record for them. Raises RequestError, leaving the model as it was.
        """
        wanted: dict[tuple[str, tuple], tuple[str, Path, float]] = {}
        for pick in picks:
            for expert, path, strength in pick.attachments():
                if getattr(self.pipe, expert, None) is None:
                    continue
                wanted[(expert, file_key(path) if path.is_file() else (str(path), -1, -1))] = (
                    pick.entry.name,
                    path,
                    strength,
                )
        fresh: dict[tuple[str, tuple], LoraFile] = {}
        read: dict[tuple, LoraFile] = {}
        for (expert, key), (name, path, _) in wanted.items():
            if (expert, key) in self.attached:
                continue
            if report is not None:
                report(f"reading the LoRA {name}")
            lora = read.get(key) or read_lora(name, path)
            read[key] = lora
            check_fits(name, lora, getattr(self.pipe, expert))
            fresh[(expert, key)] = lora
        for key, lora in read.items():
            self.hashes[key] = lora.sha256
        self._detach([k for k in self.attached if k not in wanted])
        for (expert, key), lora in fresh.items():
            self._count += 1
            adapter = f"lora{self._count}"
            with warnings.catch_warnings():  # PEFT warns whenever a model gets a second adapter: that is the point
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self.pipe.load_lora_weights(
                    dict(lora.state_dict), adapter_name=adapter, load_into_transformer_2=expert == EXPERTS[1]
                )
            self.attached[(expert, key)] = adapter
        for expert in EXPERTS:
            names = [(self.attached[k], wanted[k][2]) for k in wanted if k[0] == expert]
            if names:
                getattr(self.pipe, expert).set_adapters([n for n, _ in names], [s for _, s in names])
        return self._record(picks)

    def _detach(self, keys: list[tuple[str, tuple]]) -> None:
        for expert in EXPERTS:
            gone = [self.attached.pop(k) for k in keys if k[0] == expert]
            if not gone:
                continue
            module = getattr(self.pipe, expert)
            if any(k[0] == expert for k in self.attached):
                module.delete_adapters(gone)
            else:
                module.unload_lora()  # no adapter left: back to the plain layers

    def _record(self, picks: tuple[LoraPick, ...]) -> list[dict[str, Any]]:
        record = []
        for pick in picks:
            files = {}
            for part, path in pick.entry.files.items():
                key = file_key(path) if path.is_file() else None
                files[part] = {"file": path.name, "sha256": self.hashes.get(key) if key else None}
            names = {EXPERTS[0]: "high" if len(pick.strengths) == 2 else "strength", EXPERTS[1]: "low"}
            record.append(
                {
                    "name": pick.entry.name,
                    "kind": pick.entry.kind,
                    "files": files,
                    "strengths": {names[e]: s for e, s in pick.strengths.items()},
                    "recommended": dict(pick.entry.recommended),
                    "selection": pick.text(),
                }
            )
        return record
