"""LoRAs through the running studio: /list_loras, the loras parameter, a published LoRA fetched from a Hub, the page."""

from __future__ import annotations

import io
import json

import pytest
from gradio_client.exceptions import AppError
from safetensors.torch import save as save_bytes

from engine import list_videos
from tests.hub_server import hub_server
from tests.loras import lora_tensors, write_lora, write_pair
from tests.ui.conftest import open_page, shot, start_app, stop_app


@pytest.fixture(scope="module")
def moe_studio(tmp_path_factory):
    """A tiny A14B-style studio with a LoRA file, a high/low pair and a 2-step LoRA in its folder."""
    root = tmp_path_factory.mktemp("lora-studio")
    loras = root / "loras"
    write_lora(loras, "style", lora_tensors(seed=1), {"triggers": ["zzstyle"], "models": ["tiny-t2v-moe"]})
    write_pair(loras, "duo", lora_tensors(seed=2), lora_tensors(seed=3))
    write_lora(loras, "quick", lora_tensors(seed=4), {"distilled": True, "recommended": {"steps": 2, "guidance": 1.0}})
    write_lora(loras, "typo", lora_tensors(seed=5), {"models": ["tiny-t2v-moe"], "step": 2})
    app = start_app(root / "outputs", "--model", "tiny-t2v-moe", "--loras", str(loras))
    yield app
    stop_app(app)


def test_list_loras_returns_the_library_with_kind_models_and_recommendations(moe_studio):
    listing = {item["name"]: item for item in moe_studio.client().predict(api_name="/list_loras")}
    assert listing["style"]["kind"] == "file" and listing["style"]["triggers"] == ["zzstyle"]
    assert listing["duo"]["kind"] == "pair" and listing["duo"]["fits"]
    assert listing["quick"]["recommended"] == {"steps": 2, "guidance": 1.0}


def test_a_typo_in_a_loras_data_is_said_in_list_loras_and_once_in_the_terminal(moe_studio):
    for _ in range(2):
        listing = {item["name"]: item for item in moe_studio.client().predict(api_name="/list_loras")}
    assert listing["typo"]["usable"]
    assert "unknown key “step” (ignored; did you mean “steps”?)" in listing["typo"]["problem"]
    said = [line for line in moe_studio.log.read_text().splitlines() if "LoRA typo" in line]
    assert len(said) == 1 and "Traceback" not in moe_studio.log.read_text()


def test_text_to_video_takes_loras_with_a_strength_per_expert_and_records_them(moe_studio):
    *_, status, settings = moe_studio.client().predict(
        prompt="a heron", width=64, height=64, num_frames=5, steps=2, seed=3, loras="style:0.7:0.2, duo",
        api_name="/text_to_video",
    )  # fmt: skip
    assert status.startswith("Done"), status
    recorded = {item["name"]: item for item in settings["loras"]}
    assert recorded["style"]["strengths"] == {"high": 0.7, "low": 0.2}
    assert set(recorded["duo"]["files"]) == {"high", "low"}
    assert all(f["sha256"] for item in recorded.values() for f in item["files"].values())
    assert settings["request"]["loras"] == "style:0.7:0.2, duo"


def test_a_lora_recommending_settings_runs_with_them_and_the_settings_say_so(moe_studio):
    job = moe_studio.client().submit(
        prompt="a heron", width=64, height=64, num_frames=5, seed=3, loras="quick", api_name="/text_to_video"
    )
    job.result(timeout=300)
    settings = job.outputs()[-1][4]
    assert "Using steps 2, guidance 1, guidance (low-noise) 1 recommended by the LoRA quick." in settings["notices"]
    assert (settings["request"]["steps"], settings["request"]["guidance"]) == (2, 1.0)


def test_an_unknown_lora_name_is_refused_with_the_names_that_exist_and_the_next_call_runs(moe_studio):
    client = moe_studio.client()
    with pytest.raises(AppError, match="There is no LoRA named “nope”. LoRAs you can use: .*duo.*style"):
        client.predict(prompt="a heron", loras="nope", api_name="/text_to_video")
    *_, status, _ = client.predict(
        prompt="a heron", width=64, height=64, num_frames=5, steps=1, api_name="/text_to_video"
    )
    assert status.startswith("Done")


def test_a_broken_lora_is_refused_before_denoising_and_the_studio_keeps_serving(moe_studio, tmp_path):
    (moe_studio.outputs.parent / "loras" / "junk.safetensors").write_bytes(b"\x00" * 64)
    client = moe_studio.client()
    job = client.submit(
        prompt="a heron", width=64, height=64, num_frames=5, steps=2, loras="junk", api_name="/text_to_video"
    )
    with pytest.raises(AppError):
        job.result(timeout=120)
    statuses = [out[3] for out in job.outputs() if out[3]]
    assert not any("step" in s for s in statuses), statuses
    *_, status, _ = client.predict(
        prompt="a heron", width=64, height=64, num_frames=5, steps=1, api_name="/text_to_video"
    )
    assert status.startswith("Done")


def test_a_published_lora_is_fetched_from_the_hub_on_first_use_into_the_lora_folder(tmp_path):
    high, low = io.BytesIO(save_bytes(lora_tensors(seed=2))), io.BytesIO(save_bytes(lora_tensors(seed=3)))
    repo = {"someone/tiny-lightning": {"v1/high_noise_model.safetensors": high.getvalue(),
                                       "v1/low_noise_model.safetensors": low.getvalue()}}  # fmt: skip
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps({"loras": {"tiny-fast": {
        "repo": "someone/tiny-lightning",
        "files": {"high": "v1/high_noise_model.safetensors", "low": "v1/low_noise_model.safetensors"},
        "models": ["tiny-t2v-moe"], "distilled": True, "recommended": {"steps": 2, "guidance": 1.0},
    }}}))  # fmt: skip
    loras = tmp_path / "loras"
    with hub_server(repo) as (endpoint, fetched):
        env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf")}
        app = start_app(tmp_path / "outputs", "--model", "tiny-t2v-moe", "--loras", str(loras),
                        "--lora-presets", str(presets), env=env)  # fmt: skip
        try:
            client = app.client()
            (item,) = [i for i in client.predict(api_name="/list_loras") if i["name"] == "tiny-fast"]
            assert item["downloaded"] is False
            job = client.submit(prompt="a heron", width=64, height=64, num_frames=5, seed=1, loras="tiny-fast",
                                api_name="/text_to_video")  # fmt: skip
            job.result(timeout=300)
            statuses = [out[3] for out in job.outputs() if out[3]]
            assert any("downloading the LoRA tiny-fast" in s for s in statuses), statuses
            assert job.outputs()[-1][4]["loras"][0]["files"]["high"]["sha256"]
            assert sorted(fetched) == ["v1/high_noise_model.safetensors", "v1/low_noise_model.safetensors"]
            assert (loras / "tiny-fast" / "v1" / "high_noise_model.safetensors").read_bytes() == high.getvalue()
            (item,) = [i for i in client.predict(api_name="/list_loras") if i["name"] == "tiny-fast"]
            assert item["downloaded"] is True and item["kind"] == "pair"
            client.predict(prompt="again", width=64, height=64, num_frames=5, steps=1, loras="tiny-fast",
                           api_name="/text_to_video")  # fmt: skip
            assert len(fetched) == 2  # the second job uses the files in the folder
        finally:
            stop_app(app)


def test_the_page_picker_chooses_loras_with_strengths_and_the_fast_choice_uses_the_distilled_lora(browser, moe_studio):
    context, page = open_page(browser, moe_studio.url)
    try:
        page.locator("#t2v-loras input").click()
        page.get_by_role("option", name="typo ⚠ check its settings file").wait_for()  # said beside the LoRA
        page.get_by_role("option", name="style", exact=True).click()
        page.keyboard.press("Escape")
        strengths = page.locator("#t2v-lora-strengths textarea")
        strengths.wait_for()
        page.wait_for_function("document.querySelector('#t2v-lora-strengths textarea').value === 'style:1:1'")
        assert "zzstyle" in page.locator("#t2v-lora-about").inner_text()
        strengths.fill("style:0.5:1")
        page.locator("#t2v-quality").get_by_text("Fast (4 steps)").click()
        page.wait_for_function(
            "document.querySelector('#t2v-lora-strengths textarea').value === 'style:0.5:1, quick:1:1'"
        )
        page.locator("#t2v-prompt textarea").fill("a heron, zzstyle")
        page.locator("#t2v-generate").click()
        page.locator("#t2v-status").get_by_text("Done").wait_for(timeout=240_000)
        shot(page, "loras-picker-fast")
        newest = list_videos(moe_studio.outputs)[0]
        assert newest.settings["request"]["loras"] == "style:0.5:1, quick"  # full strength is written as the name
        assert newest.settings["request"]["steps"] == 2  # the page kept the default: the LoRA's recommendation ran
    finally:
        context.close()
