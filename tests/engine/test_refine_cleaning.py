"""Cleaning LLM replies into bare prompts, the usability judgement, and the word bounds."""

from __future__ import annotations

from engine.refine import clean_output, count_words
from engine.refine.cleaning import trim_to_words, unusable_reason

SCENE = "A cat walks along the beach at sunset while waves roll in."


def test_chat_preamble_is_removed():
    assert clean_output(f"Sure! Here is the refined prompt: {SCENE}") == SCENE


def test_a_preamble_line_ending_in_a_colon_is_removed():
    assert clean_output(f"Here's an enhanced version for Wan2.2:\n\n{SCENE}") == SCENE


def test_refined_prompt_label_is_removed():
    assert clean_output(f"Refined prompt: {SCENE}") == SCENE


def test_surrounding_quotes_are_removed():
    assert clean_output(f'"{SCENE}"') == SCENE
    assert clean_output(f"“{SCENE}”") == SCENE


def test_quotes_inside_the_prompt_stay():
    text = 'A neon sign reads "OPEN" above the door.'
    assert clean_output(text) == text


def test_bold_and_italic_markers_are_removed():
    assert clean_output("A **small** cat walks along the *quiet* beach.") == "A small cat walks along the quiet beach."


def test_headings_are_removed():
    assert clean_output(f"## Refined Prompt\n{SCENE}") == SCENE


def test_bullets_become_sentences_of_one_paragraph():
    reply = "- A cat walks along the beach\n- Waves roll in"
    assert clean_output(reply) == "A cat walks along the beach. Waves roll in"


def test_code_fences_are_removed():
    assert clean_output(f"```text\n{SCENE}\n```") == SCENE


def test_a_trailing_note_is_removed():
    assert clean_output(f"{SCENE}\n\nNote: I added the sunset for mood.") == SCENE


def test_an_inline_trailing_note_is_removed():
    assert clean_output(f"{SCENE} (Note: lighting was added.)") == SCENE


def test_a_closing_pleasantry_is_removed():
    assert clean_output(f"{SCENE} I hope this helps!") == SCENE


def test_the_word_note_inside_a_sentence_stays():
    text = "A pianist holds a note: the hall falls silent."
    assert clean_output(text) == text


def test_a_think_block_is_removed():
    assert clean_output(f"<think>The user wants a beach scene.</think>\n{SCENE}") == SCENE


def test_an_unfinished_think_block_leaves_nothing():
    assert clean_output("<think>Let me consider the lighting and") == ""


def test_chinese_preamble_quotes_and_note_are_removed():
    raw = "好的，以下是优化后的提示词：\n“一只猫沿着海滩散步，夕阳西下。”\n注：增加了光线描述。"
    assert clean_output(raw) == "一只猫沿着海滩散步，夕阳西下。"


def test_chinese_characters_count_one_word_each():
    assert count_words("一只猫 walks along") == 5


def test_trimming_stops_at_a_sentence_boundary():
    text, trimmed = trim_to_words("One two three. Four five six. Seven eight nine.", 7)
    assert (text, trimmed) == ("One two three. Four five six.", True)


def test_one_overlong_sentence_is_cut_at_the_limit_and_closed():
    text, trimmed = trim_to_words("one two three four five six", 4)
    assert (text, trimmed) == ("one two three four.", True)


def test_chinese_trimming_stops_after_a_full_stop():
    text, trimmed = trim_to_words("一只猫。沿着海滩。散步。", 7)
    assert (text, trimmed) == ("一只猫。沿着海滩。", True)


def test_text_within_the_limit_is_untouched():
    assert trim_to_words(SCENE, 200) == (SCENE, False)


def test_an_empty_reply_is_unusable():
    assert unusable_reason("", "a cat", "en") == "the reply was empty"


def test_a_repetitive_reply_is_unusable():
    assert "repeating" in unusable_reason("cat " * 40, "a cat", "en")


def test_a_reply_without_the_subject_is_unusable():
    assert "lost the subject" in unusable_reason("A dog runs through a field of flowers at noon today.", "a cat", "en")


def test_a_reply_in_the_wrong_language_is_unusable():
    assert "not in Chinese" in unusable_reason(SCENE, "一只猫", "zh")


def test_a_refusal_is_unusable():
    assert "declined" in unusable_reason("I'm sorry, but I can't help with that request today.", "a cat", "en")


def test_a_good_reply_is_usable():
    assert unusable_reason(SCENE, "a cat on the beach", "en") is None


def test_a_translation_is_not_judged_by_the_original_words():
    assert unusable_reason("一只猫沿着海滩散步，夕阳西下，海浪轻轻拍打沙滩。", "a cat on the beach", "zh") is None
