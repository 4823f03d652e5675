"""Loading a Wan pipeline with progress: download (huggingface_hub's own progress), then one component at a time.

Each component is loaded by the class model_index.json names, then the pipeline is assembled through the same
DiffusionPipeline.from_pretrained as always; loading one by one is what lets us report progress per component.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..catalog import ModelSpec, family_from_model_index
from ..errors import ModelLoadError
from . import single_file
from .storage import WeightOptions, linear_weights, quantization_config, quantized_bytes, refusal
from .tiny import ensure_tiny, tiny_path
from .weights import load_diffusers_model, plain_folder, read_header, stored_bytes, weight_files

log = logging.getLogger("wan_studio.engine")
Progress = Callable[[str, float, str], None]  # (stage, fraction 0..1, message)
MODEL_COMPONENTS = ("text_encoder", "transformer", "transformer_2", "vae", "image_encoder")


def component_dtypes(device: torch.device) -> dict[str, torch.dtype]:
    """bf16 for transformers and text encoder on CUDA, VAE always float32; float32 everywhere on CPU."""
    low = torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"text_encoder": low, "transformer": low, "transformer_2": low, "image_encoder": low, "vae": torch.float32}


def _download_progress(report: Progress):
    """A tqdm class for huggingface_hub's snapshot_download that turns its byte counts into load events."""
    from tqdm.auto import tqdm

    class _Reporter(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            out = super().update(n)
            if self.total and self.unit == "B":
                done = f"downloading {self.n / 1e9:.2f}/{self.total / 1e9:.2f} GB"
                report("download", 0.5 * min(1.0, self.n / self.total), done)
            return out

    return _Reporter


def fetch(spec: ModelSpec, report: Progress) -> Path:
    """Local folder holding the model: a tiny model built once, a folder as given, or a Hub snapshot."""
    if spec.tiny:
        if not (tiny_path(spec.id) / "model_index.json").is_file():
            report("build", 0.05, f"building the tiny model {spec.id} (once)")
        return ensure_tiny(spec.id)
    if os.path.isdir(spec.source):
        return Path(spec.source)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    report("download", 0.0, f"looking for {spec.source} (Hub or local cache)")
    try:
        return Path(snapshot_download(spec.source, revision=spec.revision, tqdm_class=_download_progress(report)))
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError(
            f"{spec.source} is not in the local Hugging Face cache and the Hub cannot be reached",
            "Connect to the internet once to download it (about 30-130 GB), or pass a local diffusers folder "
            "to --model, or use a tiny offline model (tiny-ti2v) to try the studio",
            spec.id,
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"downloading {spec.source} failed ({exc.__class__.__name__}: {exc})",
            "Check the repository id, your network and free disk space, then try again",
            spec.id,
        ) from exc


def _component_files_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def load_component(
    folder: Path,
    name: str,
    library: str,
    class_name: str,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    quantize: str = "none",
):
    """One component by the class model_index.json names, its weights cast to `dtype` as they are read.

    With a `device` the weights go straight there, never held whole in host RAM. Plain diffusers models are read
    tensor by tensor (weights.py); anything else (the text encoder, quantized folders, quantize on load) by its
    library's loader, which applies torchao's quantization (storage.py) as it reads.
    """
    cls = getattr(importlib.import_module(library), class_name)
    if name not in MODEL_COMPONENTS:
        return cls.from_pretrained(str(folder), subfolder=name)
    if library == "diffusers" and plain_folder(folder / name) and quantize == "none":
        return load_diffusers_model(cls, folder / name, dtype, device)
    kwargs: dict = {"subfolder": name, "use_safetensors": True}
    kwargs["torch_dtype" if library == "diffusers" else "dtype"] = dtype
    if quantize != "none":
        kwargs["quantization_config"] = quantization_config(quantize, library)
    if device is not None and device.type != "cpu":
        kwargs["device_map"] = {"": device}
    return cls.from_pretrained(str(folder), **kwargs)


def component_class(library: str, class_name: str):
    return getattr(importlib.import_module(library), class_name)


@dataclass(frozen=True)
class ModelFolder:
    """A model's local folder and its components (name -> (library, class)), checked before anything loads."""

    path: Path
    entries: dict[str, tuple[str, str]]
    pipeline_class: str = "WanPipeline"  # model_index.json's _class_name

    def planned_sizes(
        self,
        dtypes: dict[str, torch.dtype],
        options: WeightOptions | None = None,
        files: dict[str, single_file.SingleFile] | None = None,
    ) -> tuple[dict[str, int], int]:
        """(bytes per torch component once loaded and stored as asked, the largest weights file), from file headers
        only: a transformer file's own sizes, quantized Linear weights at one byte per value."""
        options = options or WeightOptions()
        sizes: dict[str, int] = {}
        largest = 0
        for name in self.entries:
            if name not in MODEL_COMPONENTS:
                continue
            dtype = dtypes.get(name) or torch.float32
            try:
                if files and name in files:
                    sizes[name] = files[name].planned_bytes(dtype)
                    largest = max(largest, files[name].path.stat().st_size)
                    continue
                if (kind := options.kind_for(name)) == "none":
                    sizes[name], big = stored_bytes(self.path / name, dtypes.get(name))
                else:
                    paths = weight_files(self.path / name)
                    big = max((p.stat().st_size for p in paths), default=0)
                    shapes = {k: tuple(e["shape"]) for p in paths for k, e in read_header(p).items()}
                    linear = linear_weights(component_class(*self.entries[name]), self.path / name)
                    sizes[name] = quantized_bytes(shapes, linear, kind, dtype)
            except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
                log.warning("%s: reading the weights headers failed: %s: %s", name, exc.__class__.__name__, exc)
                raise ModelLoadError(
                    f"the component {name!r} could not be loaded: its weights files are unreadable",
                    "Its files may be incomplete or corrupt: download the model again",
                ) from exc
            largest = max(largest, big)
        return sizes, largest


def open_model(spec: ModelSpec, report: Progress) -> ModelFolder:
    """Fetch the model (a tiny model is built, a Hub model downloaded) and check its folder. Raises ModelLoadError."""
    folder = fetch(spec, report)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelLoadError(
            f"{folder} has no model_index.json", "Point --model at a diffusers pipeline folder", spec.id
        )
    index = json.loads(index_path.read_text(encoding="utf-8"))
    family_from_model_index(index)  # refuses pipelines we cannot run, before loading gigabytes
    entries = {k: v for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None}
    for name in entries:
        if not (folder / name).is_dir():
            raise ModelLoadError(
                f"the component {name!r} is missing from {folder}",
                "The folder is incomplete: download the model again or point --model at a complete copy",
                spec.id,
            )
    try:
        return ModelFolder(folder, {k: (v[0], v[1]) for k, v in entries.items()}, str(index["_class_name"]))
    except (IndexError, TypeError) as exc:
        raise ModelLoadError("model_index.json is malformed", "Download the model again", spec.id) from exc


def check_weights(
    options: WeightOptions, device: torch.device, model: ModelFolder, spec: ModelSpec
) -> dict[str, single_file.SingleFile]:
    """Refuse what cannot load before anything is read (fp8 without fp8 matmuls, a transformer file that is not
    this model's); returns the checked transformer files by component. Raises ModelLoadError."""
    if (why := refusal(options, device)) is not None:
        raise ModelLoadError(*why, spec.id)
    files = {}
    for name in ("transformer", "transformer_2"):
        path = options.file_for(name)
        if path is None:
            continue
        if name not in model.entries:
            raise ModelLoadError(
                f"--transformer-2 was given but {spec.label} has a single transformer",
                "Leave --transformer-2 out, or load an A14B model",
                spec.id,
            )
        cls = component_class(*model.entries[name])
        files[name] = single_file.inspect(path, cls, model.path / name, spec.label)
    return files


def load_pipeline(
    spec: ModelSpec,
    device: torch.device,
    report: Progress,
    targets: dict[str, torch.device] | None = None,
    model: ModelFolder | None = None,
    options: WeightOptions | None = None,
    files: dict[str, single_file.SingleFile] | None = None,
):
    """The assembled pipeline; components named in `targets` are loaded straight onto that device, the rest onto
    the CPU (where they go next is memory.apply_memory's job). `options` quantizes on load; `files` replace
    transformers by single files (check_weights). Raises ModelLoadError."""
    import diffusers

    options = options or WeightOptions()
    files = files or {}
    model = model or open_model(spec, report)
    folder, entries = model.path, model.entries
    dtypes = component_dtypes(device)
    weights = {name: max(1, _component_files_size(folder / name)) for name in entries}
    total = sum(weights.values())
    done = 0
    loaded = {}
    for name, (library, class_name) in entries.items():
        where = (targets or {}).get(name)
        report(f"load {name}", 0.5 + 0.45 * done / total, f"loading {name}" + (f" onto {where}" if where else ""))
        try:
            if name in files:
                component = single_file.load(
                    files[name],
                    component_class(library, class_name),
                    folder,
                    name,
                    dtypes[name],
                    quantization_config(options.kind_for(name), library) if files[name].format != "gguf" else None,
                )
                loaded[name] = component.to(where) if where is not None else component
            else:
                loaded[name] = load_component(
                    folder, name, library, class_name, dtypes.get(name), where, options.kind_for(name)
                )
        except ModelLoadError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError, AttributeError, ImportError, SafetensorError) as exc:
            log.warning("loading %s failed: %s: %s", name, exc.__class__.__name__, str(exc)[:300])
            if name in files:
                raise ModelLoadError(
                    f"the transformer file {files[name].path.name} could not be loaded ({exc.__class__.__name__})",
                    "It may be damaged or of a kind diffusers cannot read: download it again (the terminal has "
                    "the details)",
                    spec.id,
                ) from exc
            raise ModelLoadError(
                f"the component {name!r} could not be loaded: its files do not match what "
                f"{folder / name / 'config.json'} describes, or are damaged",
                "Its files may be incomplete or corrupt: download the model again (the terminal has the details)",
                spec.id,
            ) from exc
        done += weights[name]
    report("assemble", 0.95, "assembling the pipeline")
    # The pipeline's own class, not DiffusionPipeline: diffusers 0.42's DiffusionPipeline.from_pretrained takes the
    # optional transformer / transformer_2 for plain options, drops the loaded ones and reads them again in float32.
    pipe = getattr(diffusers, model.pipeline_class).from_pretrained(str(folder), **loaded)
    pipe.set_progress_bar_config(disable=True)
    pipe.studio_revision = folder.name if folder.parent.name == "snapshots" else spec.revision  # Hub commit
    return pipe
