"""Wan Studio's engine: everything that touches torch and diffusers. Never imports gradio."""

from .catalog import PRESETS_DIR, ModelSpec, builtin_specs, resolve_spec
from .engine import APP_VERSION, Engine, ModelState, request_from_settings
from .errors import ModelLoadError, OutputError, RequestError, StudioError
from .events import (
    TERMINAL,
    Cancelled,
    Decoding,
    Done,
    Event,
    Failed,
    Frames,
    Loading,
    Notice,
    Preview,
    Queued,
    Ready,
    Refined,
    Step,
)
from .gallery import SavedVideo, find_video, list_videos
from .jobs import Job
from .memory import MODES as MEMORY_MODES
from .output import read_settings
from .refine import REFINE_BACKENDS, PromptRefiner, RefinedPrompt, RefineError, RefinerConfig
from .refine.presets import style_names, style_words
from .request import GenerationRequest, ValidRequest, validate
from .speed import ATTENTION_BACKENDS, SpeedOptions

__all__ = [
    "APP_VERSION",
    "ATTENTION_BACKENDS",
    "MEMORY_MODES",
    "PRESETS_DIR",
    "REFINE_BACKENDS",
    "TERMINAL",
    "Cancelled",
    "Decoding",
    "Done",
    "Engine",
    "Event",
    "Failed",
    "Frames",
    "GenerationRequest",
    "Job",
    "Loading",
    "ModelLoadError",
    "ModelSpec",
    "ModelState",
    "Notice",
    "OutputError",
    "Preview",
    "PromptRefiner",
    "Queued",
    "Ready",
    "RefineError",
    "Refined",
    "RefinedPrompt",
    "RefinerConfig",
    "RequestError",
    "SavedVideo",
    "SpeedOptions",
    "Step",
    "StudioError",
    "ValidRequest",
    "builtin_specs",
    "find_video",
    "list_videos",
    "read_settings",
    "request_from_settings",
    "resolve_spec",
    "style_names",
    "style_words",
    "validate",
]
