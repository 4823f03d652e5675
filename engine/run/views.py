"""One set of loaded components served through either Wan pipeline class.

TI2V-5B folders are saved under WanPipeline or WanImageToVideoPipeline (diffusers' own 5B image test saves the
latter); both classes run the 5B with the same components, text-only or with an image. A view is a second pipeline
object over the same modules, so nothing is loaded twice.
"""

from __future__ import annotations

CALLBACK_TENSORS = ["latent_model_input", "noise_pred"]  # what the step callback reads for previews


def _shared(pipe) -> dict:
    return dict(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        transformer=pipe.transformer,
        transformer_2=pipe.transformer_2,
        boundary_ratio=pipe.config.boundary_ratio,
        expand_timesteps=pipe.config.expand_timesteps,
    )


def prepare(pipe):
    """The settings every pipeline object the studio calls needs: no progress bar, preview tensors exposed."""
    pipe.set_progress_bar_config(disable=True)
    pipe._callback_tensor_inputs = list(dict.fromkeys([*pipe._callback_tensor_inputs, *CALLBACK_TENSORS]))
    return pipe


def pipeline_view(pipe, with_image: bool, cache: dict):
    """The pipeline object for a request with or without an image; built once per class, components shared."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    wanted = WanImageToVideoPipeline if with_image else WanPipeline
    if isinstance(pipe, wanted) and type(pipe) is wanted:
        return pipe
    if wanted not in cache:
        extra = {"image_processor": None, "image_encoder": None} if with_image else {}
        cache[wanted] = prepare(wanted(**_shared(pipe), **extra))
    return cache[wanted]
