"""Gradio front end. Talks to the engine's public API only (a minimal page until the Studio UI lands)."""

from .page import build

__all__ = ["build"]
