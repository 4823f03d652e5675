"""Model specs: the built-in catalog in presets/models.json, and specs read from any diffusers folder or Hub id."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
FAMILIES = ("ti2v", "t2v", "i2v")


@dataclass(frozen=True)
class Limits:
    frames: tuple[int, int]
    side: tuple[int, int]
    max_area: int
    steps: tuple[int, int]
    guidance: tuple[float, float]
    shift: tuple[float, float]
    fps: tuple[int, int]


@dataclass(frozen=True)
class ModelSpec:
    """What the engine needs to know about a model before loading it: defaults, bounds and family."""

    id: str
    label: str
    source: str  # Hub id, local folder, or "" for a tiny model built on demand
    family: str  # "ti2v" (5B-style, image optional), "t2v", "i2v" (image required)
    moe: bool
    multiple: int
    sizes: tuple[tuple[int, int], ...]
    width: int
    height: int
    frames: int
    fps: int
    steps: int
    guidance: float
    guidance_2: float | None
    shift: float
    boundary: float | None
    negative_prompt: str
    limits: Limits
    tiny: bool = False
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def accepts_image(self) -> bool:
        return self.family in ("ti2v", "i2v")

    @property
    def requires_image(self) -> bool:
        return self.family == "i2v"

    @property
    def text_to_video(self) -> bool:
        return self.family in ("ti2v", "t2v")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_catalog_file(path: Path | None = None) -> dict:
    with open(path or PRESETS_DIR / "models.json", encoding="utf-8") as f:
        return json.load(f)


def _spec_from_entry(model_id: str, entry: dict, defaults: dict) -> ModelSpec:
    data = _merge(defaults, entry)
    lim = data["limits"]
    return ModelSpec(
        id=model_id,
        label=data.get("label", model_id),
        source=data.get("repo", ""),
        family=data["family"],
        moe=data.get("boundary") is not None,
        multiple=int(data["multiple"]),
        sizes=tuple(tuple(s) for s in data["sizes"]),
        width=int(data["width"]),
        height=int(data["height"]),
        frames=int(data["frames"]),
        fps=int(data["fps"]),
        steps=int(data["steps"]),
        guidance=float(data["guidance"]),
        guidance_2=None if data.get("guidance_2") is None else float(data["guidance_2"]),
        shift=float(data["shift"]),
        boundary=None if data.get("boundary") is None else float(data["boundary"]),
        negative_prompt=data["negative_prompt"],
        limits=Limits(
            frames=tuple(lim["frames"]),
            side=tuple(lim["side"]),
            max_area=int(lim["max_area"]),
            steps=tuple(lim["steps"]),
            guidance=tuple(float(x) for x in lim["guidance"]),
            shift=tuple(float(x) for x in lim["shift"]),
            fps=tuple(lim["fps"]),
        ),
        tiny=bool(data.get("tiny", False)),
    )


def builtin_specs() -> dict[str, ModelSpec]:
    """Every model of the catalog, by id, in file order."""
    data = _load_catalog_file()
    return {mid: _spec_from_entry(mid, entry, data["defaults"]) for mid, entry in data["models"].items()}


def family_from_model_index(index: dict) -> tuple[str, bool]:
    """(family, moe) from a diffusers model_index.json, never from the model's name."""
    has_t2 = bool(index.get("transformer_2")) and index["transformer_2"][0] is not None
    moe = has_t2 and index.get("boundary_ratio") is not None
    if index.get("expand_timesteps"):
        return "ti2v", moe
    cls = index.get("_class_name", "")
    if cls == "WanImageToVideoPipeline":
        return "i2v", moe
    if cls == "WanPipeline":
        return "t2v", moe
    raise ModelLoadError(
        f"model_index.json names pipeline class {cls or '(none)'!r}",
        "Wan Studio runs WanPipeline and WanImageToVideoPipeline models (Wan2.1/Wan2.2 Diffusers format).",
    )


def read_model_index(source: str, revision: str | None = None) -> dict:
    """model_index.json of a local folder or a Hub repo (from the cache when offline)."""
    if os.path.isdir(source):
        path = Path(source) / "model_index.json"
        if not path.is_file():
            raise ModelLoadError(
                f"folder {source} has no model_index.json",
                "Point --model at a diffusers pipeline folder (the one saved by save_pretrained).",
            )
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            path = hf_hub_download(source, "model_index.json", revision=revision)
        except LocalEntryNotFoundError as exc:
            raise ModelLoadError(
                f"{source} is not in the local Hugging Face cache and the Hub cannot be reached",
                "Connect to the internet once (or unset HF_HUB_OFFLINE) to download it, "
                "or pass a local diffusers folder to --model.",
            ) from exc
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise ModelLoadError(
                f"{source} could not be fetched from the Hub ({exc.__class__.__name__}: {exc})",
                "Check the repository id and your network, or pass a local diffusers folder to --model.",
            ) from exc
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def resolve_spec(model: str, revision: str | None = None) -> ModelSpec:
    """A catalog id, a local diffusers folder, or a Hub id -> its spec.

    Folders and Hub ids take the defaults of the catalog model of the same family, and their
    boundary from their own model_index.json.
    """
    specs = builtin_specs()
    if model in specs:
        return replace(specs[model], revision=revision)
    if not model or "\x00" in model:
        raise ModelLoadError(f"{model!r} is not a model name", f"Choose one of: {', '.join(specs)}.")
    is_folder = os.path.isdir(model)
    looks_like_hub_id = model.count("/") == 1 and not model.startswith((".", "/")) and ".." not in model
    if not is_folder and not looks_like_hub_id:
        raise ModelLoadError(
            f"{model!r} is neither a catalog model, a folder, nor a Hub id",
            f"Choose one of: {', '.join(specs)}; or a diffusers folder; "
            "or a Hub id like Wan-AI/Wan2.2-TI2V-5B-Diffusers.",
        )
    index = read_model_index(model, revision)
    family, moe = family_from_model_index(index)
    by_family = {"ti2v": "ti2v-5b", "t2v": "t2v-a14b", "i2v": "i2v-a14b"}
    base = specs[by_family[family]]
    boundary = index.get("boundary_ratio") if moe else None
    return replace(
        base,
        id=model,
        label=f"{model} ({family}{', MoE' if moe else ''})",
        source=model,
        family=family,
        moe=moe,
        boundary=boundary,
        guidance_2=base.guidance_2 if moe else None,
        revision=revision,
    )
