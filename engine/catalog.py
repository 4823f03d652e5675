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
    heads: int | None = None  # the transformers' attention heads (a parallel degree must divide them); None: unknown
    window: int = 0  # frames of one window of a long video (the length the model was trained on); 0: `frames`
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    # Where each default came from when a folder's own value differs from its family's preset: field -> notice.
    # Said with every job that uses the default (validate), so the video's settings explain it.
    differs: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def accepts_image(self) -> bool:
        return self.family in ("ti2v", "i2v")

    @property
    def requires_image(self) -> bool:
        return self.family == "i2v"

    @property
    def window_frames(self) -> int:
        return self.window or self.frames

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
        heads=data.get("heads"),
        window=int(data.get("window") or 0),
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


def read_model_file(source: str, name: str, revision: str | None = None) -> dict:
    """A JSON file of a local folder or a Hub repo (from the cache when offline), e.g. model_index.json."""
    if os.path.isdir(source):
        path = Path(source) / name
        if not path.is_file():
            raise ModelLoadError(
                f"folder {source} has no {name}",
                "Point --model at a diffusers pipeline folder (the one saved by save_pretrained).",
            )
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            path = hf_hub_download(source, name, revision=revision)
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
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{name} of {source} is not readable JSON", "Download the model again.") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{name} of {source} is not a JSON object", "Download the model again.")
    return data


def read_model_index(source: str, revision: str | None = None) -> dict:
    """model_index.json of a local folder or a Hub repo (from the cache when offline)."""
    return read_model_file(source, "model_index.json", revision)


def scheduler_shift(config: dict) -> float | None:
    """The flow shift a scheduler config applies (UniPC/DPM: flow_shift with flow sigmas; Euler: shift)."""
    if config.get("use_dynamic_shifting"):
        return None
    return _number_in(config, "flow_shift" if "flow_shift" in config else "shift")


def _number_in(config: dict, key: str) -> float | None:
    value = config.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _folder_defaults(model: str, index: dict, base: ModelSpec, moe: bool, revision: str | None) -> dict[str, Any]:
    """A folder's own defaults (its scheduler's shift, its boundary, any guidance or steps its model_index.json
    carries), each with a notice where it differs from the family preset. The folder wins: it is what was trained."""
    try:
        scheduler = read_model_file(model, "scheduler/scheduler_config.json", revision)
    except ModelLoadError:
        scheduler = {}
    found: dict[str, tuple[float | None, str]] = {
        "shift": (scheduler_shift(scheduler), "its scheduler config"),
        "guidance": (_number_in(index, "guidance_scale"), "its model_index.json"),
        "steps": (_number_in(index, "num_inference_steps"), "its model_index.json"),
    }
    if moe:
        found["boundary"] = (_number_in(index, "boundary_ratio"), "its model_index.json")
        found["guidance_2"] = (_number_in(index, "guidance_scale_2"), "its model_index.json")
    values: dict[str, Any] = {}
    differs: dict[str, str] = {}
    names = {
        "shift": "shift",
        "guidance": "guidance",
        "guidance_2": "low-noise guidance",
        "steps": "steps",
        "boundary": "expert boundary",
    }
    for key, (value, where) in found.items():
        preset = getattr(base, key)
        if value is None:
            continue
        value = int(value) if key == "steps" else value
        values[key] = value
        if preset is not None and abs(float(value) - float(preset)) > 1e-9:
            differs[key] = (
                f"{names[key].capitalize()} {value:g} comes from the model folder ({where}); the {base.id} preset "
                f"uses {preset:g}. The folder's value is used because it is what this model was made with; "
                f"set it in Advanced to override."
            )
    if not scheduler:
        differs["scheduler"] = f"The model folder has no readable scheduler config: the {base.id} defaults are used."
    values["differs"] = differs
    return values


def _widen(limits: Limits, values: dict[str, Any]) -> Limits:
    """Bounds that admit a folder's own defaults (a distilled model may use 1 step or guidance 1.0)."""

    def around(bounds: tuple, value: Any) -> tuple:
        return bounds if value is None else (min(bounds[0], value), max(bounds[1], value))

    guidance = around(limits.guidance, values.get("guidance"))
    return replace(
        limits,
        steps=around(limits.steps, values.get("steps")),
        guidance=around(guidance, values.get("guidance_2")),
        shift=around(limits.shift, values.get("shift")),
    )


def resolve_spec(model: str, revision: str | None = None) -> ModelSpec:
    """A catalog id, a local diffusers folder, or a Hub id -> its spec.

    A catalog model takes the catalog's defaults. A folder or Hub id takes its own scheduler's shift, its own
    boundary and any guidance or steps it states; the rest (sizes, frames, steps where silent) from the catalog
    model of the same family. Where the folder's value differs from that preset, spec.differs says so.
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
    own = _folder_defaults(model, index, base, moe, revision)
    guidance = own.get("guidance", base.guidance)
    return replace(
        base,
        id=model,
        label=f"{model} ({family}{', MoE' if moe else ''})",
        source=model,
        family=family,
        moe=moe,
        boundary=own.get("boundary") if moe else None,
        shift=own.get("shift", base.shift),
        guidance=guidance,
        guidance_2=own.get("guidance_2", base.guidance_2 if base.guidance_2 is not None else guidance) if moe else None,
        steps=own.get("steps", base.steps),
        limits=_widen(base.limits, own),
        revision=revision,
        differs=own["differs"],
        heads=_heads(model, revision),
    )


def _heads(model: str, revision: str | None) -> int | None:
    """A folder's attention heads from its transformer's config (None when it cannot be read yet)."""
    try:
        heads = read_model_file(model, "transformer/config.json", revision).get("num_attention_heads")
    except ModelLoadError:
        return None
    return heads if isinstance(heads, int) and not isinstance(heads, bool) else None
