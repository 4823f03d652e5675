"""The offline rules refiner: the user's words kept as typed, cinematic facets and motion added from presets data.

Deterministic: every choice comes from a hash of the prompt, so the same input always gives the same output (and
the en and zh outputs make the same choices, since their option lists run in parallel).
"""

from __future__ import annotations

import functools
import hashlib
import re

from .base import RefineError
from .cleaning import WORD_BOUNDS, count_words, is_chinese, join_sentences
from .presets import rules_data, style_words

# The order facets are added in while there is room; the text shows them in the data's facet_order.
_PRIORITY = ("camera_movement", "shot_size", "light", "time_of_day", "camera_angle", "colour_tone", "composition")


@functools.lru_cache(maxsize=512)
def _pattern(words: tuple[str, ...]) -> re.Pattern | None:
    latin = [w for w in words if w.isascii()]
    if not latin:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(latin, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})(?:s|es|ing|ed)?\b", re.I)


def first_mention(text: str, words: list[str]) -> int | None:
    """Where `text` first names any of `words` (Latin: whole words, plural/-ing/-ed allowed; Chinese: anywhere)."""
    found = [i for w in words if not w.isascii() and (i := text.find(w)) >= 0]
    pattern = _pattern(tuple(words))
    if pattern and (match := pattern.search(text)):
        found.append(match.start())
    return min(found, default=None)


def mentions(text: str, words: list[str]) -> bool:
    return first_mention(text, words) is not None


def _sentence(text: str, chinese: bool) -> str:
    text = re.sub(r"\s+", " ", text).strip().rstrip(",;:，、；：")
    if not text:
        return text
    if text[0].isascii() and text[0].islower():
        text = text[0].upper() + text[1:]
    if not re.search(r"[.!?。！？]$", text):
        text += "。" if chinese else "."
    return text


class _Chooser:
    """Deterministic choices keyed by the prompt and mode (not by language, so en and zh agree)."""

    def __init__(self, prompt: str, mode: str, variant: int = 0):
        self.seed = mode + "|" + re.sub(r"\s+", " ", prompt.strip().lower()) + (f"|v{variant}" if variant else "")

    def index(self, name: str, n: int) -> int:
        digest = hashlib.sha256(f"{self.seed}|{name}".encode()).digest()
        return int.from_bytes(digest[:4], "big") % n


def refine_with_rules(
    prompt: str, language: str, mode: str, style: str | None = None, variant: int = 0
) -> tuple[str, str | None]:
    """(refined text, notice or None). The user's text is never cut; facets are added while the bounds allow.

    `variant` > 0 makes other deterministic choices (the variations' wordings); 0 is the usual refinement."""
    data = rules_data()
    prompt = re.sub(r"\s+", " ", prompt or "").strip()
    if not prompt and mode == "t2v":
        raise RefineError("Type an idea first: the rules refiner builds on your words.")
    chinese_out = language == "zh"
    choose = _Chooser(prompt, mode, variant)
    low, high = WORD_BOUNDS[mode]
    phrases = data["phrases"][language]

    words, skip = style_words(style, language)
    if words is None:  # a style the user named in the prompt leads with its preset words
        for preset in data.get("styles", {}).values():
            if mentions(prompt, preset.get("detect", [])):
                words, skip = preset["words"][language], list(preset.get("skip", []))
                break
    head = [_sentence(words, chinese_out)] if words else []
    lead = _sentence(prompt, is_chinese(prompt)) if prompt else phrases["i2v_no_text"]
    head.append(lead)

    facets: dict[str, str] = {}
    for name in data["facet_order"][mode]:
        facet = data["facets"][name]
        named = mentions(f"{prompt} {words or ''}", facet.get("detect", []))  # the user's or the style's choice stands
        if mode in facet.get("modes", [mode]) and name not in skip and not named:
            options = facet[language]
            facets[name] = options[choose.index(name, len(options))]

    # The category named earliest wins: the subject usually comes before its action and setting.
    named = [(first_mention(prompt, c.get("detect", [])), i) for i, c in enumerate(data["motion"])]
    named = [(pos, i) for pos, i in named if pos is not None]
    category = data["motion"][min(named)[1]] if named else data["motion"][-1]
    motion_options = category[language][mode]
    motion = [motion_options[choose.index("motion", len(motion_options))]]
    motion.append(phrases["secondary_motion"] if mode == "t2v" else phrases["i2v_consistency"])

    def assemble(chosen: dict[str, str], details: list[str]) -> str:
        ordered = [chosen[n] for n in data["facet_order"][mode] if n in chosen]
        if mode == "i2v":  # image-to-video: the motion leads, the camera follows
            return join_sentences(head + motion[:1] + ordered + motion[1:] + details)
        return join_sentences(head + ordered + motion + details)

    chosen: dict[str, str] = {}
    for name in sorted(facets, key=lambda n: _PRIORITY.index(n) if n in _PRIORITY else len(_PRIORITY)):
        if count_words(assemble({**chosen, name: facets[name]}, [])) <= high:
            chosen[name] = facets[name]
    details: list[str] = []
    if mode == "t2v":
        for detail in phrases["details"]:
            if count_words(assemble(chosen, details)) >= low:
                break
            if count_words(assemble(chosen, [*details, detail])) <= high:
                details.append(detail)
    text = assemble(chosen, details)

    notices = []
    if prompt and is_chinese(prompt) != chinese_out:
        notices.append(
            "The rules refiner does not translate: your words are kept as typed and the added description is in "
            + ("Chinese." if chinese_out else "English.")
        )
    if count_words(text) > high:
        notices.append(f"Your prompt is already over {high} words; it was kept whole.")
    return text, " ".join(notices) or None
