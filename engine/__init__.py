"""Wan Studio's engine: everything that touches torch and diffusers. Never imports gradio.

Names are imported on first use (PEP 562), so `python app.py --help` answers without loading torch.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

# torchao (int8/fp8 on load) warns at import about optional kernels built for other CUDA/Python builds, and torch
# about its enum registrations: noise on every start whether quantization is used or not.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
logging.getLogger("diffusers.quantizers.torchao.torchao_quantizer").setLevel(logging.ERROR)  # about torchao files

_WHERE: dict[str, tuple[str, str]] = {
    "APP_VERSION": (".engine", "APP_VERSION"),
    "ATTENTION_BACKENDS": (".flags", "ATTENTION_BACKENDS"),
    "Cancelled": (".events", "Cancelled"),
    "Decoding": (".events", "Decoding"),
    "Done": (".events", "Done"),
    "Engine": (".engine", "Engine"),
    "Event": (".events", "Event"),
    "Failed": (".events", "Failed"),
    "Frames": (".events", "Frames"),
    "GenerationRequest": (".admission.request", "GenerationRequest"),
    "WeightOptions": (".models.storage", "WeightOptions"),
    "QUANTIZE_TYPES": (".flags", "QUANTIZE_TYPES"),
    "TEXT_ENCODER_DEVICES": (".flags", "TEXT_ENCODER_DEVICES"),
    "Job": (".jobs", "Job"),
    "Loading": (".events", "Loading"),
    "MEMORY_MODES": (".flags", "MEMORY_MODES"),
    "ModelLoadError": (".errors", "ModelLoadError"),
    "ModelSpec": (".catalog", "ModelSpec"),
    "ModelState": (".engine", "ModelState"),
    "Notice": (".events", "Notice"),
    "OutputError": (".errors", "OutputError"),
    "PRESETS_DIR": (".catalog", "PRESETS_DIR"),
    "Preview": (".events", "Preview"),
    "PromptRefiner": (".refine", "PromptRefiner"),
    "Queued": (".events", "Queued"),
    "REFINE_BACKENDS": (".flags", "REFINE_BACKENDS"),
    "Ready": (".events", "Ready"),
    "RefineError": (".refine", "RefineError"),
    "Refined": (".events", "Refined"),
    "RefinedPrompt": (".refine", "RefinedPrompt"),
    "RefinerConfig": (".refine", "RefinerConfig"),
    "RequestError": (".errors", "RequestError"),
    "SavedVideo": (".library.gallery", "SavedVideo"),
    "SpeedOptions": (".run.speed", "SpeedOptions"),
    "Step": (".events", "Step"),
    "Window": (".events", "Window"),
    "StudioError": (".errors", "StudioError"),
    "TERMINAL": (".events", "TERMINAL"),
    "ValidRequest": (".admission.request", "ValidRequest"),
    "builtin_specs": (".catalog", "builtin_specs"),
    "find_video": (".library.gallery", "find_video"),
    "set_mark": (".library.gallery", "set_mark"),
    "in_batches": (".library.gallery", "in_batches"),
    "MARKS": (".library.gallery", "MARKS"),
    "Batch": (".admission.variations", "Batch"),
    "plan_takes": (".admission.variations", "plan_takes"),
    "wordings": (".admission.variations", "wordings"),
    "MAX_TAKES": (".admission.variations", "MAX_TAKES"),
    "MAX_PASSES": (".admission.windows", "MAX_PASSES"),
    "continues": (".admission.windows", "continues"),
    "overlaps": (".admission.windows", "overlaps"),
    "find_by_sha256": (".library.gallery", "find_by_sha256"),
    "export_batch": (".library.export", "export_batch"),
    "CredentialOptions": (".library.credentials", "CredentialOptions"),
    "check_credentials": (".library.credentials", "check"),
    "batch_takes": (".library.export", "batch_takes"),
    "list_videos": (".library.gallery", "list_videos"),
    "read_settings": (".library.output", "read_settings"),
    "request_from_settings": (".engine", "request_from_settings"),
    "resolve_spec": (".catalog", "resolve_spec"),
    "style_names": (".refine.presets", "style_names"),
    "style_words": (".refine.presets", "style_words"),
    "validate": (".admission.request", "validate"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _WHERE[name]
    value = getattr(importlib.import_module(module, __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
