"""Quantized weights and single-file transformers: int8 on load, GGUF and original/ComfyUI files, the text encoder on
the CPU, what is refused before loading, and the memory planner with stored sizes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from engine import Done, Failed, GenerationRequest, ModelLoadError, WeightOptions
from engine.catalog import builtin_specs
from engine.models.loading import load_pipeline, open_model
from engine.models.memory import plan_memory
from engine.models.storage import describe
from engine.models.tiny import ensure_tiny
from tests.frames import assert_same_video_within_rounding
from tests.single_files import tiny_model_transformer, write_gguf, write_safetensors

SPECS = builtin_specs()
CPU = torch.device("cpu")


def request(**kw) -> GenerationRequest:
    for key, value in dict(prompt="a heron lands on a pond", width=64, height=64, frames=5, steps=2, seed=7).items():
        kw.setdefault(key, value)
    return GenerationRequest(**kw)


def run(engine, **kw) -> tuple[np.ndarray, Done]:
    events = list(engine.submit(request(**kw)).events(timeout=300))
    assert isinstance(events[-1], Done), events[-1]
    frames = np.concatenate([e.frames for e in events if e.__class__.__name__ == "Frames"])
    return frames, events[-1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny transformer files in every layout, for the 5B-style model and the MoE experts."""
    root = tmp_path_factory.mktemp("transformer-files")
    ti2v = tiny_model_transformer("tiny-ti2v")
    high, low = tiny_model_transformer("tiny-t2v-moe"), tiny_model_transformer("tiny-t2v-moe", "transformer_2")
    return {
        "original": write_safetensors(root / "wan-original.safetensors", ti2v, "original"),
        "comfyui": write_safetensors(root / "wan-comfyui.safetensors", ti2v, "comfyui"),
        "q8": write_gguf(root / "wan-Q8_0.gguf", ti2v, "Q8_0"),
        "q4": write_gguf(root / "wan-Q4_0.gguf", ti2v, "Q4_0"),
        "moe-high-q5": write_gguf(root / "moe-high-Q5_0.gguf", high, "Q5_0"),
        "moe-low-q8": write_gguf(root / "moe-low-Q8_0.gguf", low, "Q8_0"),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny 5B-style model's frames with the published (float32 on CPU) weights."""
    from engine import Engine

    engine = Engine("tiny-ti2v", outputs=tmp_path_factory.mktemp("reference"))
    try:
        return run(engine)[0]
    finally:
        engine.shutdown()


# ----- quantize on load ------------------------------------------------------------------------------------------


def test_int8_stores_the_transformer_and_text_encoder_linear_weights_in_int8():
    options = WeightOptions(quantize="int8", quantize_text="int8")
    pipe = load_pipeline(SPECS["tiny-ti2v"], CPU, lambda *a: None, options=options)
    assert describe(pipe.transformer)[0] == "int8"
    assert describe(pipe.text_encoder)[0] == "int8"
    assert describe(pipe.vae)[0] == "fp32"
    assert type(pipe.transformer.blocks[0].attn1.to_q.weight).__name__ == "Int8Tensor"


def test_int8_generates_on_cpu_close_to_the_published_weights(make_engine, reference):
    engine = make_engine(weights=WeightOptions(quantize="int8", quantize_text="int8"))
    frames, done = run(engine)
    assert frames.shape == reference.shape
    assert psnr(frames, reference) > 30
    weights = done.settings["weights"]
    assert weights["transformer"]["storage"] == "int8"
    assert weights["text_encoder"]["storage"] == "int8"
    assert weights["vae"]["storage"] == "fp32"


def test_planned_sizes_are_the_bytes_the_quantized_weights_take_once_loaded():
    spec = SPECS["tiny-ti2v"]
    options = WeightOptions(quantize="int8", quantize_text="int8")
    folder = open_model(spec, lambda *a: None)
    planned, _ = folder.planned_sizes({n: torch.float32 for n in folder.entries}, options)
    plain, _ = folder.planned_sizes({n: torch.float32 for n in folder.entries})
    pipe = load_pipeline(spec, CPU, lambda *a: None, model=folder, options=options)
    for name in ("transformer", "text_encoder"):
        actual = describe(getattr(pipe, name))[1]
        assert planned[name] < plain[name]
        assert abs(planned[name] - actual) <= 0.1 * actual, (name, planned[name], actual)


def test_fp8_is_refused_on_a_machine_without_fp8_matmuls_with_the_reason_and_the_studio_keeps_serving(make_engine):
    engine = make_engine(weights=WeightOptions(quantize="fp8"))
    state = engine.state()
    assert state.state == "failed"
    assert "fp8 matrix units" in state.message and "--quantize int8" in state.message
    with pytest.raises(ModelLoadError, match="fp8"):
        engine.submit(request())
    events = list(engine.load_model(weights=WeightOptions()).events(timeout=300))
    assert events[-1].__class__.__name__ == "Ready"
    run(engine)


# ----- single files ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["original", "comfyui"])
def test_a_safetensors_transformer_in_the_original_or_comfyui_layout_gives_the_folders_frames(
    make_engine, files, reference, layout
):
    engine = make_engine(weights=WeightOptions(transformer=str(files[layout])))
    frames, done = run(engine)
    folder = tiny_model_transformer("tiny-ti2v").state_dict()
    loaded = engine.pipeline.transformer.state_dict()
    assert all(torch.equal(loaded[key], folder[key]) for key in folder)  # the very weights of the folder, exactly
    # a different path all the same: from_single_file's tensors sit in memory unlike our loader's copies, so a CPU
    # may take another kernel for them
    assert_same_video_within_rounding(frames, reference, f"the {layout} single file")
    entry = done.settings["weights"]["transformer"]
    assert entry["file"] == str(files[layout]) and entry["file_layout"] == layout
    assert entry["sha256"] == hashlib.sha256(files[layout].read_bytes()).hexdigest()


def test_a_gguf_transformer_loads_quantized_and_says_its_type_in_the_header_and_the_settings(
    make_engine, files, reference
):
    engine = make_engine(weights=WeightOptions(transformer=str(files["q8"])))
    frames, done = run(engine)
    params = {type(p).__name__ for p in engine.pipeline.transformer.parameters()}
    assert "GGUFParameter" in params
    assert psnr(frames, reference) > 30
    entry = done.settings["weights"]["transformer"]
    assert entry["storage"] == "GGUF Q8_0" and entry["file_format"] == "gguf"
    assert "transformer GGUF Q8_0" in engine.state().storage and "wan-Q8_0.gguf" in engine.state().storage


def test_a_4_bit_gguf_generates_further_from_the_published_weights_than_q8(make_engine, files, reference):
    q8, _ = run(make_engine(weights=WeightOptions(transformer=str(files["q8"]))))
    q4, done = run(make_engine(weights=WeightOptions(transformer=str(files["q4"]))))
    assert done.settings["weights"]["transformer"]["storage"] == "GGUF Q4_0"
    assert psnr(q4, reference) < psnr(q8, reference)


def test_moe_experts_each_take_their_own_gguf_file(make_engine, files):
    engine = make_engine(
        "tiny-t2v-moe",
        weights=WeightOptions(transformer=str(files["moe-high-q5"]), transformer_2=str(files["moe-low-q8"])),
    )
    _, done = run(engine)
    weights = done.settings["weights"]
    assert weights["transformer"]["storage"] == "GGUF Q5_0"
    assert weights["transformer_2"]["storage"] == "GGUF Q8_0"
    assert weights["transformer_2"]["file"].endswith("moe-low-Q8_0.gguf")


def test_another_models_transformer_is_refused_before_loading_and_the_next_load_works(make_engine, files):
    engine = make_engine("tiny-t2v-moe", weights=WeightOptions(transformer=str(files["q8"])))
    events = list(engine.load_model().events(timeout=300))
    assert isinstance(events[-1], Failed)
    message = events[-1].message
    assert "wan-Q8_0.gguf is a Wan transformer of width 24, 48 input channels" in message
    assert "needs a Wan transformer of width 24, 16 input channels" in message
    assert not any(e.__class__.__name__ == "Loading" and e.stage.startswith("load ") for e in events)
    assert engine.pipeline is None
    events = list(engine.load_model(weights=WeightOptions()).events(timeout=300))
    assert events[-1].__class__.__name__ == "Ready"


def test_a_file_that_is_not_a_wan_transformer_is_refused_with_what_it_is(make_engine):
    vae = ensure_tiny("tiny-ti2v") / "vae" / "diffusion_pytorch_model.safetensors"
    engine = make_engine(weights=WeightOptions(transformer=str(vae)))
    events = list(engine.load_model().events(timeout=300))
    assert isinstance(events[-1], Failed)
    assert "is not a Wan transformer" in events[-1].message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_file_is_refused_clearly(make_engine, files, tmp_path, damage):
    data = files["q8"].read_bytes()
    bad = tmp_path / "damaged.gguf"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a gguf file at all" * 10)
    engine = make_engine(weights=WeightOptions(transformer=str(bad)))
    events = list(engine.load_model().events(timeout=300))
    assert isinstance(events[-1], Failed)
    assert "damaged.gguf" in events[-1].message
    assert "download it again" in events[-1].message


def test_a_truncated_safetensors_file_is_refused_before_loading(make_engine, files, tmp_path):
    data = files["original"].read_bytes()
    bad = tmp_path / "half.safetensors"
    bad.write_bytes(data[: len(data) - 100])
    engine = make_engine(weights=WeightOptions(transformer=str(bad)))
    events = list(engine.load_model().events(timeout=300))
    assert isinstance(events[-1], Failed)
    assert "half.safetensors is not a readable safetensors file" in events[-1].message


def test_a_missing_file_is_said_at_once_without_loading(make_engine, tmp_path):
    engine = make_engine(weights=WeightOptions(transformer=str(tmp_path / "nowhere.gguf")))
    assert engine.state().state == "failed"
    assert "does not exist" in engine.state().message


def test_a_second_transformer_file_on_a_single_transformer_model_is_refused(make_engine, files):
    engine = make_engine(weights=WeightOptions(transformer_2=str(files["q8"])))
    events = list(engine.load_model().events(timeout=300))
    assert isinstance(events[-1], Failed)
    assert "single transformer" in events[-1].message


def test_switching_model_drops_the_previous_models_transformer_file(make_engine, files):
    engine = make_engine(weights=WeightOptions(transformer=str(files["q8"])))
    events = list(engine.load_model("tiny-t2v-moe").events(timeout=300))
    assert events[-1].__class__.__name__ == "Ready"
    assert engine.weights.transformer is None


# ----- text encoder on the CPU -----------------------------------------------------------------------------------


def test_the_text_encoder_on_the_cpu_gives_the_same_frames_and_is_recorded(make_engine, reference):
    engine = make_engine(weights=WeightOptions(text_encoder_device="cpu"))
    frames, done = run(engine)
    # the same path on a machine without a GPU: the pipeline's own encode_prompt, on the CPU, on the same weights
    assert np.array_equal(frames, reference)
    assert done.settings["weights"]["text_encoder"]["runs_on"] == "cpu"
    assert "(runs on the CPU)" in engine.state().storage


# ----- the planner with quantized sizes (pure) -------------------------------------------------------------------

GB = 10**9
# Published sizes (parameters x bytes): TI2V-5B transformer 5.0 B, umT5-XXL encoder 5.7 B, Wan2.2 VAE ~0.7 GB in fp32.
FIVE_B = {"transformer": 10.0 * GB, "text_encoder": 11.4 * GB, "vae": 0.7 * GB}
A14B = {"transformer": 28.6 * GB, "transformer_2": 28.6 * GB, "text_encoder": 11.4 * GB, "vae": 0.5 * GB}


def quantized(sizes: dict, transformers: float = 1.0, text: float = 1.0) -> dict:
    factors = {"transformer": transformers, "transformer_2": transformers, "text_encoder": text}
    return {n: int(b * factors.get(n, 1.0)) for n, b in sizes.items()}


def plan(sizes: dict, card_gb: int, moe: bool = False) -> str:
    free = int(card_gb * GB * 0.96)  # the CUDA context and the desktop take a little
    return plan_memory("auto", torch.device("cuda"), sizes, free, moe).mode


@pytest.mark.parametrize(
    "card, bf16, int8_all",
    [(12, "group", "group"), (16, "group", "model"), (24, "model", "none"), (48, "none", "none")],
)
def test_the_planner_keeps_more_resident_with_int8_weights_of_the_5b(card, bf16, int8_all):
    assert plan(FIVE_B, card) == bf16
    assert plan(quantized(FIVE_B, 0.5, 0.5), card) == int8_all


@pytest.mark.parametrize("card, mode", [(12, "model"), (16, "none")])
def test_the_planner_leaves_a_text_encoder_on_the_cpu_out_of_vram(card, mode):
    sizes = {n: b for n, b in quantized(FIVE_B, 0.5).items() if n != "text_encoder"}
    assert plan(sizes, card) == mode


@pytest.mark.parametrize(
    "card, bf16, q4", [(12, "group", "group"), (16, "group", "model"), (24, "group", "none"), (48, "model", "none")]
)
def test_the_planner_keeps_more_resident_with_4_bit_gguf_experts(card, bf16, q4):
    assert plan(A14B, card, moe=True) == bf16
    assert plan(quantized(A14B, 0.28, 0.5), card, moe=True) == q4


# ----- LoRAs on quantized weights --------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", ["int8", "gguf"])
def test_a_lora_attaches_to_quantized_transformers_and_detaches_exactly(make_engine, files, tmp_path, weights):
    from tests.loras import lora_tensors, write_lora

    write_lora(tmp_path / "loras", "style", lora_tensors(seed=1), {"models": ["tiny-ti2v"]})
    options = WeightOptions(quantize="int8") if weights == "int8" else WeightOptions(transformer=str(files["q8"]))
    engine = make_engine(weights=options, loras=tmp_path / "loras")
    plain, _ = run(engine)
    styled, done = run(engine, loras="style")
    again, _ = run(engine)
    assert not np.array_equal(plain, styled)
    assert np.array_equal(plain, again)  # the same path after the LoRA is detached: exactly the frames of before
    assert done.settings["loras"][0]["name"] == "style"
