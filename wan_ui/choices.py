"""The page's quick choices (size, duration, quality, style), computed from a model's spec and presets/ui.json."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from engine import MAX_PASSES, PRESETS_DIR, ModelSpec, continues, style_names
from engine import style_words as preset_style_words


@cache
def ui_presets() -> dict[str, Any]:
    with open(PRESETS_DIR / "ui.json", encoding="utf-8") as f:
        return json.load(f)


def size_value(width: int, height: int) -> str:
    return f"{width}x{height}"


def parse_size(value: str) -> tuple[int, int]:
    width, height = str(value).lower().split("x")
    return int(width), int(height)


def size_label(width: int, height: int) -> str:
    short = min(width, height)
    tier = "720p" if short >= 704 else "480p" if short >= 480 else f"{short}p"
    shape = "landscape" if width > height else "portrait" if height > width else "square"
    return f"{tier} {shape} · {width}×{height}"


def size_choices(spec: ModelSpec) -> list[tuple[str, str]]:
    sizes = list(spec.sizes)
    if (spec.width, spec.height) not in sizes:
        sizes.insert(0, (spec.width, spec.height))
    return [(size_label(w, h), size_value(w, h)) for w, h in sizes]


def longest_frames(spec: ModelSpec) -> int:
    """The most frames one request makes: windows up to MAX_PASSES passes on models that continue from an image."""
    return spec.limits.frames[1] * (MAX_PASSES if continues(spec) else 1)


def snap_frames(frames: float, spec: ModelSpec) -> int:
    """The nearest 4k+1 frame count inside the model's limits (the VAE packs 4 frames per latent frame)."""
    low, high = spec.limits.frames[0], longest_frames(spec)
    snapped = 4 * int(round((frames - 1) / 4)) + 1
    return max(low + (1 - low) % 4, min(high - (high - 1) % 4, snapped))


def duration_label(frames: int, fps: int, one_pass: int | None = None) -> str:
    windows = " · in windows" if one_pass is not None and frames > one_pass else ""
    return f"{frames / fps:.1f} s · {frames} frames{windows}"


def duration_choices(spec: ModelSpec, fps: int | None = None) -> list[tuple[str, int]]:
    fps = fps or spec.fps
    counts = {snap_frames(seconds * fps + 1, spec) for seconds in ui_presets()["durations_s"]}
    counts.add(spec.frames)
    return [(duration_label(n, fps, spec.limits.frames[1]), n) for n in sorted(counts)]


def duration_info(spec: ModelSpec) -> str:
    """How long videos work on this model, for the Duration menu."""
    one = spec.limits.frames[1] / spec.fps
    if not continues(spec):
        return f"Up to {one:.0f} s in one pass; longer videos need TI2V-5B or I2V-A14B (they continue in windows)"
    return (
        f"Beyond {one:.0f} s the video is made in windows, each continuing from the last frame of the one before. "
        "One prompt line per window, in order (the last line goes on); one line serves them all"
    )


QUALITIES = tuple(ui_presets()["quality"])  # step multipliers; the page adds "fast" (a 4-step LoRA) after them


def quality_steps(spec: ModelSpec, quality: str) -> int:
    factor = ui_presets()["quality"].get(quality, 1.0)
    low, high = spec.limits.steps
    return max(low, min(high, int(round(spec.steps * factor))))


def quality_for_steps(spec: ModelSpec, steps: int) -> str | None:
    return next((q for q in QUALITIES if quality_steps(spec, q) == steps), None)


STYLES = ("none", *style_names("en"))  # the refiner's style presets (presets/refine/rules.json), shared


def style_choices() -> list[tuple[str, str]]:
    return [("None", "none"), *((label, key) for key, label in style_names("en").items())]


def style_words(style: str | None) -> str:
    if not style or style == "none":
        return ""
    return preset_style_words(style, "en")[0] or ""


def compose_prompt(prompt: str, words: str) -> str:
    """The prompt as sent to the model: the user's text, then the style words (both visible on the page)."""
    prompt, words = (prompt or "").strip(), (words or "").strip()
    if not words or words in prompt:
        return prompt
    if not prompt:
        return words
    return f"{prompt.rstrip(' .,;')}. {words}"
