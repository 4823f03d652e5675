"""Quantized weights and transformer files through the running studio: launch flags, the API, the header, the page's
weights choice, and refusals that leave the studio serving."""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

from tests.single_files import tiny_model_transformer, write_gguf
from tests.ui.conftest import own_studio_page, shot, start_app, stop_app


def generate(app, **kw) -> tuple[str, dict]:
    *_, status, settings = app.client().predict(
        prompt="a heron", width=64, height=64, num_frames=5, steps=2, seed=3, api_name="/text_to_video", **kw
    )
    return status, settings


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return write_gguf(
        tmp_path_factory.mktemp("gguf") / "wan-tiny-Q8_0.gguf", tiny_model_transformer("tiny-ti2v"), "Q8_0"
    )


def test_a_studio_started_with_a_gguf_transformer_and_an_int8_text_encoder_generates_and_records_them(
    tmp_path, gguf_file
):
    app = start_app(tmp_path / "outputs", "--transformer", str(gguf_file), "--quantize-text", "int8")
    try:
        status, settings = generate(app)
        assert status.startswith("Done"), status
        weights = settings["weights"]
        assert weights["transformer"]["storage"] == "GGUF Q8_0"
        assert weights["transformer"]["file"] == str(gguf_file) and len(weights["transformer"]["sha256"]) == 64
        assert weights["text_encoder"]["storage"] == "int8"
    finally:
        stop_app(app)


def test_a_transformer_file_of_another_model_is_refused_and_the_studio_keeps_serving(tmp_path, gguf_file):
    app = start_app(tmp_path / "outputs", "--model", "tiny-t2v-moe", "--transformer", str(gguf_file))
    try:
        with pytest.raises(AppError, match="48 input channels"):
            generate(app)
        assert app.client().predict(api_name="/list_loras") is not None  # still answering
        log = app.log.read_text(errors="replace")
        assert "Traceback" not in log
    finally:
        stop_app(app)


def test_fp8_on_a_machine_without_fp8_matmuls_is_said_at_launch_and_the_page_can_choose_int8(tmp_path, browser):
    with own_studio_page(browser, tmp_path / "outputs", "--quantize", "fp8") as (app, page):
        log = app.log.read_text(errors="replace")
        assert log.count("fp8 matrix units") == 1, log  # said once at launch, in one line
        page.wait_for_function("document.querySelector('#model-state').innerText.includes('fp8 matrix units')")
        with pytest.raises(AppError, match="fp8"):
            generate(app)
        page.click("#quantize-select input")
        page.get_by_role("option", name="int8: about half the memory").click()
        page.wait_for_function(
            "document.querySelector('#model-state').innerText.includes('Storage:') && "
            "document.querySelector('#model-state').innerText.includes('transformer int8')",
            timeout=120_000,
        )
        shot(page, "weights-int8-header")
        status, settings = generate(app)
        assert status.startswith("Done"), status
        assert settings["weights"]["transformer"]["storage"] == "int8"
