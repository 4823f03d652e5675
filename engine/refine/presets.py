"""The refiner's data in presets/refine/: read on use (so edits apply without a restart) and checked key by key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..catalog import PRESETS_DIR
from .base import REFINE_LANGUAGES, REFINE_MODES, RefineError

REFINE_PRESETS = PRESETS_DIR / "refine"
_cache: dict[Path, tuple[int, Any]] = {}


def _load(name: str) -> Any:
    path = REFINE_PRESETS / name
    try:
        stamp = path.stat().st_mtime_ns
        cached = _cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RefineError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except json.JSONDecodeError as exc:
        raise RefineError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    _cache[path] = (stamp, data)
    return data


def _require(ok: bool, path: str, what: str) -> None:
    if not ok:
        raise RefineError(f"presets/refine/{path}: {what}.")


def rules_data() -> dict[str, Any]:
    """presets/refine/rules.json, checked: parallel en/zh options, a default motion, words for every style."""
    data = _load("rules.json")
    f = "rules.json"
    _require(isinstance(data.get("facets"), dict), f, "needs a 'facets' object")
    for name, facet in data["facets"].items():
        counts = {len(facet.get(lang) or []) for lang in REFINE_LANGUAGES}
        _require(len(counts) == 1 and 0 not in counts, f, f"facet {name!r} needs the same number of en and zh options")
    for mode in REFINE_MODES:
        order = data.get("facet_order", {}).get(mode)
        _require(isinstance(order, list) and set(order) <= set(data["facets"]), f, f"facet_order.{mode} is wrong")
    motion = data.get("motion")
    ok = isinstance(motion, list) and bool(motion) and motion[-1].get("name") == "default"
    _require(ok, f, "motion must be a list ending with 'default'")
    for category in motion:
        for lang in REFINE_LANGUAGES:
            for mode in REFINE_MODES:
                what = f"motion {category.get('name')!r} lacks {lang}.{mode}"
                _require(bool(category.get(lang, {}).get(mode)), f, what)
    for lang in REFINE_LANGUAGES:
        phrases = data.get("phrases", {}).get(lang, {})
        for key in ("secondary_motion", "i2v_no_text", "i2v_consistency", "details"):
            _require(bool(phrases.get(key)), f, f"phrases.{lang}.{key} is missing")
    for name, style in data.get("styles", {}).items():
        for lang in REFINE_LANGUAGES:
            _require(bool(style.get("words", {}).get(lang)), f, f"style {name!r} lacks words in {lang}")
    return data


def system_prompts() -> dict[str, Any]:
    """presets/refine/system_prompts.json, checked: a system prompt per mode and language, and the user templates."""
    data = _load("system_prompts.json")
    f = "system_prompts.json"
    for mode in REFINE_MODES:
        for lang in REFINE_LANGUAGES:
            _require(isinstance(data.get(mode, {}).get(lang), str), f, f"{mode}.{lang} is missing")
    for lang in REFINE_LANGUAGES:
        for key in ("idea", "motion_idea", "no_text", "style", "language"):
            _require(isinstance(data.get("user", {}).get(lang, {}).get(key), str), f, f"user.{lang}.{key} is missing")
    return data


def style_words(style: str | None, language: str) -> tuple[str | None, list[str]]:
    """(words to put first, facets the style decides itself) for a preset key, a preset label, or free text."""
    if not style or not style.strip():
        return None, []
    style = style.strip()
    for key, preset in rules_data().get("styles", {}).items():
        labels = {key.lower(), *(str(v).lower() for v in preset.get("label", {}).values())}
        if style.lower() in labels:
            return preset["words"][language], list(preset.get("skip", []))
    return style, []


def style_names(language: str = "en") -> dict[str, str]:
    """Preset style keys and their labels in `language`, for a style dropdown."""
    return {key: s.get("label", {}).get(language, key) for key, s in rules_data().get("styles", {}).items()}
