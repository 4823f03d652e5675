"""Gradio front end. Talks to the engine's public API only (wan_ui never reaches into engine internals)."""

from .compare import HEAD
from .page import CSS, build

__all__ = ["CSS", "HEAD", "build"]
