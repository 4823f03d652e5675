"""Single-file transformers as creators have them, built offline from a tiny model's own weights: the original Wan
layout (the reverse of diffusers' conversion), ComfyUI's (the same under model.diffusion_model.), and GGUF files
written with the gguf package the way the community converters write them (2-D weights quantized where their rows
fit the block size, the rest kept in float, tensors of more than 4 dims folded with their real shape in metadata).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

# diffusers name part -> original Wan name part, applied in this order (see convert_wan_transformer_to_diffusers).
_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
)


def tiny_model_transformer(model: str, name: str = "transformer") -> torch.nn.Module:
    """A tiny catalog model's transformer (or expert), as its folder stores it: the weights the files are made of."""
    from diffusers import WanTransformer3DModel

    from engine.models.tiny import ensure_tiny

    return WanTransformer3DModel.from_pretrained(str(ensure_tiny(model)), subfolder=name)


def original_name(name: str) -> str:
    for ours, theirs in _TO_ORIGINAL:
        name = name.replace(ours, theirs)
    if name == "scale_shift_table":
        return "head.modulation"
    name = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", name)
    # diffusers swapped norm2 and norm3 of each block
    return re.sub(r"^(blocks\.\d+)\.norm([23])\.", lambda m: f"{m[1]}.norm{5 - int(m[2])}.", name)


def original_state_dict(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's weights under the original Wan names (ComfyUI: prefix "model.diffusion_model.")."""
    return {prefix + original_name(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def write_safetensors(path: Path, model: torch.nn.Module, layout: str = "original") -> Path:
    """layout: original | comfyui | diffusers."""
    from safetensors.torch import save_file

    if layout == "diffusers":
        tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    else:
        tensors = original_state_dict(model, "model.diffusion_model." if layout == "comfyui" else "")
    save_file(tensors, str(path))
    return path


def write_gguf(path: Path, model: torch.nn.Module, quant: str = "Q8_0") -> Path:
    """The model as a GGUF file in the original layout, its 2-D weights quantized to `quant` where they can be."""
    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    writer = gguf.GGUFWriter(str(path), arch="wan")
    for name, tensor in original_state_dict(model).items():
        data = tensor.float().numpy()
        if data.ndim > 4:  # GGUF holds at most 4 dims
            writer.add_array(f"comfy.gguf.orig_shape.{name}", list(data.shape))
            data = data.reshape(data.shape[0], -1)
        if tensor.dim() == 2 and data.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
