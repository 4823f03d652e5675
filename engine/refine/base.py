"""Shared types of the prompt refiner: the result, the configuration and the error a backend raises."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import StudioError
from ..flags import REFINE_BACKENDS  # noqa: F401 - re-exported: the refiner's backends

REFINE_LANGUAGES = ("en", "zh")
REFINE_MODES = ("t2v", "i2v")
# What "after use" does with the local model: "auto" keeps it on the GPU only when the video model's plan is "none"
# and room remains, parks it in CPU RAM otherwise, and unloads it when the device is the CPU; "cpu" always parks it
# in CPU RAM; "unload" always frees it.
LOCAL_OFFLOAD = ("auto", "cpu", "unload")

DEFAULT_LOCAL_MODEL = "Qwen/Qwen2.5-3B-Instruct"
DEFAULT_LOCAL_VL_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"


class RefineError(StudioError):
    """A backend could not produce a usable prompt; the message says why, in the user's words (never a secret)."""


@dataclass(frozen=True)
class RefinedPrompt:
    """One refinement: the text to generate with, who made it, and what the user should know about it."""

    text: str
    backend: str  # the backend that made `text` ("rules" after a fallback)
    original: str
    language: str
    mode: str
    style: str | None = None
    model: str | None = None  # the LLM that wrote it (Hub id, folder or server model name); None for rules
    timings: dict[str, float] = field(default_factory=dict)
    notice: str | None = None  # what happened that the user should know (fallback reason, trimming, time limit)
    fell_back: bool = False  # True when the requested backend failed and `rules` made the text

    def as_metadata(self) -> dict[str, Any]:
        """A JSON-able record for GenerationRequest.extra["refined_prompt"]; holds no credentials by construction."""
        return {
            "text": self.text,
            "backend": self.backend,
            "model": self.model,
            "original": self.original,
            "language": self.language,
            "mode": self.mode,
            "style": self.style,
            "fell_back": self.fell_back,
            "notice": self.notice,
        }


def _env_number(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number; got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be above 0; got {raw!r}")
    return value


@dataclass(frozen=True)
class RefinerConfig:
    """Where each backend comes from and how far it may go. The API key never shows in repr or errors."""

    backend: str = "rules"  # used when refine() is called with backend=None
    local_model: str = DEFAULT_LOCAL_MODEL  # Hub id or local folder of a chat LLM
    local_vl_model: str = DEFAULT_LOCAL_VL_MODEL  # Hub id or local folder of a vision-language model (i2v + image)
    local_offload: str = "auto"  # see LOCAL_OFFLOAD
    openai_base_url: str = ""  # e.g. http://127.0.0.1:11434/v1 (Ollama); requests go to {base_url}/chat/completions
    openai_model: str = ""
    api_key: str = field(default="", repr=False)
    max_new_tokens: int = 512
    timeout: float = 60.0  # seconds: the local generation time limit and the HTTP time-out
    temperature: float = 0.7  # 0 = greedy (deterministic)

    def __post_init__(self) -> None:
        if self.backend not in REFINE_BACKENDS:
            raise ValueError(f"refine backend must be one of {', '.join(REFINE_BACKENDS)}; got {self.backend!r}")
        if self.local_offload not in LOCAL_OFFLOAD:
            raise ValueError(f"local offload must be one of {', '.join(LOCAL_OFFLOAD)}; got {self.local_offload!r}")
        if self.max_new_tokens < 1 or self.timeout <= 0 or self.temperature < 0:
            raise ValueError("max_new_tokens must be >= 1, timeout > 0 and temperature >= 0")

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "api_key":
                value = "***" if value else ""
            parts.append(f"{f.name}={value!r}")
        return f"RefinerConfig({', '.join(parts)})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> RefinerConfig:
        """Read WAN_REFINE_* and WAN_OPENAI_* (the key also from OPENAI_API_KEY); flags passed as overrides win.

        Without WAN_REFINE_BACKEND the default is "openai" when a server URL is set, else "rules" (the local model
        is a multi-GB download, so it is chosen, not assumed).
        """
        env = os.environ if env is None else env
        base_url = env.get("WAN_OPENAI_BASE_URL", "").strip()
        values: dict[str, Any] = {
            "backend": env.get("WAN_REFINE_BACKEND", "").strip().lower() or ("openai" if base_url else "rules"),
            "local_model": env.get("WAN_REFINE_MODEL", "").strip() or DEFAULT_LOCAL_MODEL,
            "local_vl_model": env.get("WAN_REFINE_VL_MODEL", "").strip() or DEFAULT_LOCAL_VL_MODEL,
            "local_offload": env.get("WAN_REFINE_OFFLOAD", "").strip().lower() or "auto",
            "openai_base_url": base_url,
            "openai_model": env.get("WAN_OPENAI_MODEL", "").strip(),
            "api_key": (env.get("WAN_OPENAI_API_KEY") or env.get("OPENAI_API_KEY") or "").strip(),
            "max_new_tokens": _env_number(env, "WAN_REFINE_MAX_NEW_TOKENS", int, 512),
            "timeout": _env_number(env, "WAN_REFINE_TIMEOUT", float, 60.0),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
