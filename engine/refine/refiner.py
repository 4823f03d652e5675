"""PromptRefiner: one entry point over the three backends, with cleaning, bounds and the fallback to rules."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..admission.request import load_image
from .base import REFINE_BACKENDS, REFINE_LANGUAGES, REFINE_MODES, RefinedPrompt, RefineError, RefinerConfig
from .cleaning import (
    WORD_BOUNDS,
    clean_output,
    count_words,
    is_chinese,
    join_sentences,
    sentences,
    trim_to_words,
    unusable_reason,
)
from .local import LocalBackend
from .openai_compat import OpenAIBackend
from .presets import style_names, style_words, system_prompts
from .rules import refine_with_rules

log = logging.getLogger("wan_studio.refine")


def build_messages(prompt: str, language: str, mode: str, style: str | None, has_image: bool) -> tuple[str, str]:
    """(system prompt, user message) from presets/refine/system_prompts.json for this mode and language."""
    data = system_prompts()
    low, high = WORD_BOUNDS[mode]
    system = data[mode][language].replace("{min_words}", str(low)).replace("{max_words}", str(high))
    templates = data["user"][language]
    if prompt:
        lines = [templates["idea" if mode == "t2v" else "motion_idea"].replace("{prompt}", prompt)]
    else:
        lines = [templates["no_text"]]
    if style:
        lines.append(templates["style"].replace("{style}", style))
    lines.append(templates["language"])
    return system, "\n".join(lines)


def _style_first(text: str, words: str | None) -> str:
    """Put the style words first when the model left them out (the first clause of the style is what is looked for)."""
    if not words:
        return text
    key = re.split(r"[,，。.]", words, maxsplit=1)[0].strip().lower()
    if key and key in text[: max(80, len(key) + 20)].lower():
        return text
    lead = words if re.search(r"[.!?。！？]$", words) else words + ("。" if is_chinese(words) else ".")
    return join_sentences([lead, text])


def _drop_unfinished(text: str) -> str:
    """A reply cut by the token or time limit ends mid-sentence: drop that last fragment when there is more."""
    parts = sentences(text)
    if len(parts) > 1 and not re.search(r"[.!?。！？]$", parts[-1]):
        return join_sentences(parts[:-1])
    return text


def _as_image(image: Any) -> Image.Image | None:
    if image is None:
        return None
    if isinstance(image, np.ndarray):  # what a Gradio image component gives with type="numpy"
        image = Image.fromarray(image.astype(np.uint8) if image.dtype != np.uint8 else image)
    return load_image(image)


class PromptRefiner:
    """Turns a short idea into a Wan2.2 prompt with the rules, local or openai backend; never leaves the user empty:
    a failing backend falls back to rules, and the result says so and why.

    Thread-safe. The local backend uses the GPU: run it through Engine.refine so it waits for video jobs.
    """

    def __init__(self, config: RefinerConfig | None = None, device: str | torch.device | None = None):
        self.config = config or RefinerConfig.from_env()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.local = LocalBackend(self.config, self.device)
        self.openai = OpenAIBackend(self.config)

    def __repr__(self) -> str:
        return f"PromptRefiner({self.config!r}, device={self.device})"

    def backend_status(self) -> dict[str, str | None]:
        """Each backend -> None when it can be used now, otherwise why not (for the UI to show)."""
        return {"rules": None, "local": self.local.availability(), "openai": self.openai.configured}

    def available_backends(self) -> list[str]:
        """The backends that can be tried now, in REFINE_BACKENDS order ("rules" is always there)."""
        return [name for name, why in self.backend_status().items() if why is None]

    def uses_device(self, backend: str | None = None) -> bool:
        """Whether this backend computes on the engine's device (then it must queue behind video jobs)."""
        return (backend or self.config.backend) == "local"

    def styles(self, language: str = "en") -> dict[str, str]:
        """Preset style keys -> labels in `language` (pass a key, a label or any free text as `style`)."""
        return style_names(language)

    def unload(self) -> None:
        """Free the local model now (RAM and VRAM)."""
        self.local.unload()

    def refine(
        self,
        prompt: str,
        image: Any = None,
        language: str = "en",
        mode: str = "t2v",
        backend: str | None = None,
        style: str | None = None,
        *,
        video_plan: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        status: Callable[[str], None] | None = None,
        variant: int = 0,
    ) -> RefinedPrompt:
        """Refine `prompt` (image: PIL, path or array, used in i2v mode). A failing backend falls back to rules with
        fell_back=True and the reason in `notice`; raises only for nothing to refine (RefineError), an unreadable
        image (RequestError) or an unknown backend, language or mode (ValueError).

        Keyword-only arguments are for Engine.refine: the video model's memory plan, a cancel check, status lines;
        `variant` > 0 asks for another version of the same idea (rules: other deterministic choices; an LLM samples
        anew on every call).
        """
        backend = backend or self.config.backend
        if backend not in REFINE_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(REFINE_BACKENDS)}; got {backend!r}")
        if language not in REFINE_LANGUAGES:
            raise ValueError(f"language must be one of {', '.join(REFINE_LANGUAGES)}; got {language!r}")
        if mode not in REFINE_MODES:
            raise ValueError(f"mode must be one of {', '.join(REFINE_MODES)}; got {mode!r}")
        original = prompt or ""
        prompt = re.sub(r"\s+", " ", original).strip()
        picture = _as_image(image) if mode == "i2v" else None
        if not prompt and picture is None:
            raise RefineError("Type an idea first" + (" or add an image." if mode == "i2v" else "."))
        started = time.perf_counter()
        if backend == "rules":
            return self._rules(original, prompt, language, mode, style, started, variant)
        try:
            return self._llm(
                backend, original, prompt, picture, language, mode, style, started, video_plan, should_stop, status
            )
        except RefineError as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - a model or library failure must still leave the user a prompt
            log.exception("%s refiner crashed", backend)
            reason = f"{exc.__class__.__name__}: {exc}"
        reason = self.openai._scrub(reason)
        log.warning("%s refiner failed, using rules: %s", backend, reason)
        result = self._rules(original, prompt, language, mode, style, started)
        notice = f"The {backend} refiner failed: {reason.rstrip('.')}. The offline rules wrote this prompt instead."
        return replace(result, fell_back=True, notice=" ".join(filter(None, [notice, result.notice])))

    # ----- backends -------------------------------------------------------------------------------------------

    def _rules(
        self, original: str, prompt: str, language: str, mode: str, style: str | None, started: float, variant: int = 0
    ):
        text, notice = refine_with_rules(prompt, language, mode, style, variant)
        return RefinedPrompt(
            text=text,
            backend="rules",
            original=original,
            language=language,
            mode=mode,
            style=style,
            timings={"total": time.perf_counter() - started},
            notice=notice,
        )

    def _llm(
        self, backend, original, prompt, picture, language, mode, style, started, video_plan, should_stop, status
    ) -> RefinedPrompt:
        words, _skip = style_words(style, language)
        system, user = build_messages(prompt, language, mode, words, picture is not None)
        if backend == "local":
            raw, model, info = self.local.complete(
                system, user, picture, video_plan=video_plan, should_stop=should_stop, status=status
            )
            timings = dict(info["timings"])
        else:
            t0 = time.perf_counter()
            raw, model, info = self.openai.complete(system, user, picture)
            timings = {"request": time.perf_counter() - t0}
        text = clean_output(raw)
        notices = []
        finish = info.get("finish_reason")
        if finish in ("length", "time"):
            text = _drop_unfinished(text)
            limit = f"{self.config.max_new_tokens}-token" if finish == "length" else f"{self.config.timeout:g} s"
            notices.append(f"The model stopped at the {limit} limit.")
        reason = unusable_reason(text, prompt, language)
        if reason:
            raise RefineError(f"{model} gave no usable prompt ({reason})")
        text = _style_first(text, words)
        low, high = WORD_BOUNDS[mode]
        text, trimmed = trim_to_words(text, high)
        if trimmed:
            notices.append(f"Trimmed to at most {high} words.")
        elif count_words(text) < low:
            notices.append(f"The prompt has {count_words(text)} words; Wan2.2 does best with {low} to {high}.")
        timings["total"] = time.perf_counter() - started
        return RefinedPrompt(
            text=text,
            backend=backend,
            original=original,
            language=language,
            mode=mode,
            style=style,
            model=model,
            timings=timings,
            notice=" ".join(notices) or None,
        )
