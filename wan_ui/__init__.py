"""Gradio front end. Talks to the engine's public API only (wan_ui never reaches into engine internals)."""

from .page import CSS, build

__all__ = ["CSS", "build"]
