"""The offline rules refiner: golden outputs in both languages, determinism, kept subject, bounds and styles.

Regenerate tests/data/refine/golden.json after a deliberate change to presets/refine/rules.json with:
    python -c "import json; from engine.refine.rules import refine_with_rules as r; p='tests/data/refine/golden.json';
    d=json.load(open(p)); [c.update(text=r(c['prompt'], c['language'], c['mode'], c['style'])[0]) for c in d['cases']];
    json.dump(d, open(p, 'w'), ensure_ascii=False, indent=1)"
and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import PromptRefiner, RefineError
from engine.refine import WORD_BOUNDS, count_words
from engine.refine.presets import style_names

GOLDEN = json.loads((Path(__file__).parent.parent / "data" / "refine" / "golden.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]
PROMPTS_EN = [
    "a cat walks along the beach",
    "an old man feeds pigeons in a park",
    "a red car drives through a rainy city",
    "fireworks over a harbour",
    "a glass of water",
]


@pytest.fixture(scope="module")
def refiner() -> PromptRefiner:
    return PromptRefiner(device="cpu")


@pytest.mark.parametrize("case", CASES, ids=[f"{c['language']}-{c['mode']}-{c['style']}" for c in CASES])
def test_rules_output_matches_the_golden_text(refiner, case):
    result = refiner.refine(
        case["prompt"], language=case["language"], mode=case["mode"], backend="rules", style=case["style"]
    )
    assert result.text == case["text"]


def test_same_input_gives_the_same_output(refiner):
    first = refiner.refine("a fox runs through tall grass", backend="rules")
    second = PromptRefiner(device="cpu").refine("a fox runs through tall grass", backend="rules")
    assert first.text == second.text


def test_the_users_words_are_kept_verbatim_in_english(refiner):
    result = refiner.refine("an old man feeds pigeons in a park", backend="rules")
    assert "An old man feeds pigeons in a park." in result.text


def test_the_users_words_are_kept_verbatim_in_chinese(refiner):
    result = refiner.refine("一只猫沿着海滩散步", language="zh", backend="rules")
    assert result.text.startswith("一只猫沿着海滩散步。")


@pytest.mark.parametrize("prompt", PROMPTS_EN)
def test_text_to_video_prompts_are_80_to_200_words(refiner, prompt):
    low, high = WORD_BOUNDS["t2v"]
    for language in ("en", "zh"):
        assert low <= count_words(refiner.refine(prompt, language=language, backend="rules").text) <= high


@pytest.mark.parametrize("prompt", PROMPTS_EN)
def test_image_to_video_prompts_stay_within_120_words(refiner, prompt):
    for language in ("en", "zh"):
        assert count_words(refiner.refine(prompt, language=language, mode="i2v", backend="rules").text) <= 120


def test_image_to_video_describes_motion_not_the_look(refiner):
    from engine.refine.presets import rules_data

    text = refiner.refine("the woman turns and smiles", mode="i2v", backend="rules").text
    facets = rules_data()["facets"]
    look = [o for name in ("shot_size", "light", "time_of_day", "colour_tone") for o in facets[name]["en"]]
    assert not any(option in text for option in look)
    assert any(option in text for option in facets["camera_movement"]["en"])


def test_a_facet_the_user_named_is_not_added_again(refiner):
    text = refiner.refine("close-up of a dog at night", backend="rules").text
    for other in ("medium shot", "wide establishing", "full shot", "golden hour", "early morning", "midday"):
        assert other not in text


def test_a_chosen_style_puts_its_words_first(refiner):
    result = refiner.refine("a cat sleeps on a windowsill", backend="rules", style="watercolour")
    assert result.text.startswith("Watercolour painting style")
    assert "A cat sleeps on a windowsill." in result.text


def test_a_style_label_in_chinese_selects_the_same_preset(refiner):
    result = refiner.refine("一只猫在窗台上睡觉", language="zh", backend="rules", style="水彩")
    assert result.text.startswith("水彩画风格")


def test_a_free_text_style_is_used_as_typed(refiner):
    result = refiner.refine("a cat sleeps on a windowsill", backend="rules", style="ukiyo-e woodblock print")
    assert result.text.startswith("Ukiyo-e woodblock print.")


def test_a_style_named_in_the_prompt_leads_with_its_preset_words(refiner):
    text = refiner.refine("anime girl waves goodbye", backend="rules").text
    assert text.startswith("Anime style")
    assert "Anime girl waves goodbye." in text


def test_rules_do_not_translate_and_say_so(refiner):
    result = refiner.refine("a cat walks along the beach", language="zh", backend="rules")
    assert result.text.startswith("A cat walks along the beach.")
    assert "does not translate" in result.notice


def test_an_empty_text_to_video_prompt_is_refused(refiner):
    with pytest.raises(RefineError, match="Type an idea"):
        refiner.refine("   ", backend="rules")


def test_image_to_video_without_text_animates_the_image(refiner):
    from PIL import Image

    result = refiner.refine("", image=Image.new("RGB", (32, 32)), mode="i2v", backend="rules")
    assert result.text.startswith("The scene in the image comes gently to life.")


def test_a_very_long_prompt_is_kept_whole_with_a_notice(refiner):
    prompt = " ".join(["a lighthouse on a cliff above the stormy sea"] * 25)  # 225 words
    result = refiner.refine(prompt, backend="rules")
    assert prompt.capitalize()[:40] in result.text
    assert "kept whole" in result.notice


def test_style_presets_have_labels_in_both_languages():
    assert style_names("en")["film_noir"] == "Film noir"
    assert style_names("zh")["film_noir"] == "黑色电影"
