"""Inputs that leave checking to the engine, so a bad value gets the engine's message in the user's words.

Both change one instance's preprocess rather than subclassing: Gradio writes a .pyi stub beside the module of
every Component subclass when it is imported, which fails where the app's folder is read-only.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

NOT_A_PICTURE = "That file is not a picture the studio can read. Use a PNG, JPEG, WebP, BMP, TIFF or GIF image."


def picture_input(**kwargs: Any) -> gr.Image:
    """gr.Image that hands the uploaded file's path on unopened.

    Gradio's own preprocessing opens the file and, for any mode but RGB, decodes and converts it first (alpha onto
    black, before any size check). The engine reads it instead: header first, size capped before the pixels are
    decoded, every failure in the user's words (engine.admission.request.load_image).
    """
    image = gr.Image(**kwargs, type="filepath", image_mode=None)

    def preprocess(payload: Any) -> str | None:
        if payload is None:
            return None
        if payload.path is None:  # a data: URL (a pasted picture): Gradio decodes it into a file
            try:
                return gr.Image.preprocess(image, payload)
            except (OSError, ValueError) as exc:
                raise gr.Error(NOT_A_PICTURE) from exc
        return str(payload.path)  # Gradio has already checked that it is an upload in its cache

    image.preprocess = preprocess
    return image


def number_input(**kwargs: Any) -> gr.Number:
    """gr.Number that passes text from a script ("12", "1e3", "wide") to the engine as it is.

    Gradio's own preprocessing fails on text with a Python TypeError; the engine reads numbers written as text and
    names the parameter when it cannot.
    """
    number = gr.Number(**kwargs)

    def preprocess(payload: Any) -> Any:
        if payload is None or isinstance(payload, (int, float)):
            return gr.Number.preprocess(number, payload)
        return payload

    number.preprocess = preprocess
    return number
