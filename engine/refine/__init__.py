"""Prompt refinement for Wan2.2: offline rules, a local transformers LLM/VLM, or an OpenAI-compatible server."""

from .base import REFINE_BACKENDS, REFINE_LANGUAGES, REFINE_MODES, RefinedPrompt, RefineError, RefinerConfig
from .cleaning import WORD_BOUNDS, clean_output, count_words
from .local import placement_after_use
from .refiner import PromptRefiner

__all__ = [
    "REFINE_BACKENDS",
    "REFINE_LANGUAGES",
    "REFINE_MODES",
    "WORD_BOUNDS",
    "PromptRefiner",
    "RefineError",
    "RefinedPrompt",
    "RefinerConfig",
    "clean_output",
    "count_words",
    "placement_after_use",
]
