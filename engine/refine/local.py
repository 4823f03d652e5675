"""The local backend: a chat LLM (or, for image-to-video with an image, a vision-language model) via transformers.

The model's home between uses is decided after each use by `placement_after_use`: a GPU is shared with the video
model, so the LLM stays there only when the video model sits wholly on the GPU ("none" plan) and room remains;
otherwise it waits in CPU RAM, and on a CPU-only machine it is unloaded so that RAM goes back to the video model.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..models.memory import HEADROOM_BYTES, free_vram
from .base import RefineError, RefinerConfig

log = logging.getLogger("wan_studio.refine")
GIB = 1024**3
VL_IMAGE_MAX_SIDE = 768  # Qwen2.5-VL turns each 28x28 patch into a token: 768 px keeps it under ~800 image tokens
GENERATE_ROOM_BYTES = GIB  # activations and KV cache of a ~2k-token chat on a 3B model, with margin


def placement_after_use(device_type: str, policy: str, video_plan: str | None, free_bytes: int | None) -> str:
    """Where the LLM goes after a refinement: "keep" (stay on the GPU), "cpu" (park in CPU RAM) or "unload".

    Pure, so the GPU policy is testable on any machine. `video_plan` is the video model's memory mode when one is
    loaded (None when none is), `free_bytes` the free VRAM with the LLM still resident.
    """
    if policy == "unload":
        return "unload"
    if device_type != "cuda":
        return "unload" if policy == "auto" else "cpu"
    if policy == "cpu":
        return "cpu"
    if video_plan == "none" and free_bytes is not None and free_bytes >= HEADROOM_BYTES:
        return "keep"
    return "cpu"


class _StopFlag:
    """A StoppingCriteria-style callable: stops generation when the job is cancelled."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), bool(self.should_stop()), dtype=torch.bool, device=input_ids.device)


class _ImageOnlyProcessor:
    """Qwen2-VL-style inputs from a tokenizer and an image processor, for when AutoProcessor cannot be built.

    transformers builds Qwen2.5-VL's processor with a video processor that needs torchvision, which this project
    does not otherwise require. Images need only this: one <|image_pad|> per merged patch, then the pixel values.
    """

    image_token = "<|image_pad|>"

    def __init__(self, tokenizer: Any, image_processor: Any):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        if tokenizer.convert_tokens_to_ids(self.image_token) in (None, tokenizer.unk_token_id):
            raise ValueError(f"the tokenizer has no {self.image_token} token (not a Qwen2-VL-style model)")

    def apply_chat_template(self, messages: list[dict], **kwargs: Any) -> str:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def __call__(self, text: list[str], images: list[Image.Image], return_tensors: str = "pt") -> Any:
        pixels = self.image_processor(images=images, return_tensors=return_tensors)
        merge = getattr(self.image_processor, "merge_size", 2)
        chat = text[0]
        for grid in pixels["image_grid_thw"]:
            chat = chat.replace(self.image_token, "<|placeholder|>" * (int(grid.prod()) // merge**2), 1)
        chat = chat.replace("<|placeholder|>", self.image_token)
        inputs = self.tokenizer([chat], return_tensors=return_tensors)
        inputs.update(pixels)
        return inputs


def _weights_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers()
    )


class LocalBackend:
    """Lazily loads one model at a time (text or vision); thread-safe; see placement_after_use for where it lives."""

    def __init__(self, config: RefinerConfig, device: torch.device):
        self.config = config
        self.device = device
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self._lock = threading.RLock()
        self._model: torch.nn.Module | None = None
        self._processor: Any = None  # a tokenizer for text models, an AutoProcessor for vision models
        self._model_id: str | None = None
        self.last_placement: str | None = None  # what happened after the last use: "keep", "cpu" or "unload"

    @property
    def loaded(self) -> str | None:
        """The id of the model in memory, or None."""
        return self._model_id

    @property
    def model_device(self) -> torch.device | None:
        model = self._model
        return None if model is None else next(model.parameters()).device

    def availability(self) -> str | None:
        """None when the local models can be used; otherwise why not (offline and not downloaded)."""
        import os

        model_id = self.config.local_model
        if self._model_id or Path(model_id).is_dir() or os.environ.get("HF_HUB_OFFLINE", "") in ("", "0"):
            return None
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            return None
        return f"{model_id} is not downloaded and the Hub is offline"

    def unload(self) -> None:
        """Free the model and its processor (RAM and VRAM)."""
        with self._lock:
            if self._model is None:
                return
            self._model = self._processor = self._model_id = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # ----- load and place -------------------------------------------------------------------------------------

    def _ensure(self, model_id: str, vision: bool, status: Callable[[str], None]) -> float:
        """Load `model_id` into CPU RAM unless it is already in memory; returns the seconds spent."""
        if self._model_id == model_id:
            return 0.0
        self.unload()
        started = time.perf_counter()
        status(f"loading {model_id}")
        log.info("loading refiner model %s (%s)", model_id, "vision" if vision else "text")
        try:
            if vision:
                processor = self._vision_processor(model_id)
                from transformers import AutoModelForImageTextToText

                model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=self.dtype, use_safetensors=True)
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                processor = AutoTokenizer.from_pretrained(model_id)
                model = AutoModelForCausalLM.from_pretrained(model_id, dtype=self.dtype, use_safetensors=True)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise RefineError(
                f"Could not load the local model {model_id} ({first[:200]}). Download it once with network access, "
                "or point WAN_REFINE_MODEL / WAN_REFINE_VL_MODEL at a local folder."
            ) from None
        model.eval()
        self._model, self._processor, self._model_id = model, processor, model_id
        return time.perf_counter() - started

    @staticmethod
    def _vision_processor(model_id: str) -> Any:
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        try:
            return AutoProcessor.from_pretrained(model_id)
        except ImportError as exc:  # torchvision missing for the video half of the processor
            log.info("no AutoProcessor for %s (%s); using its tokenizer and image processor", model_id, str(exc)[:80])
            return _ImageOnlyProcessor(
                AutoTokenizer.from_pretrained(model_id), AutoImageProcessor.from_pretrained(model_id)
            )

    def _onto_device(self) -> None:
        """Move the model to the GPU when it is not there, if it fits next to whatever else is resident."""
        model = self._model
        if self.device.type != "cuda" or self.model_device == self.device:
            return
        need = _weights_bytes(model) + GENERATE_ROOM_BYTES
        free = free_vram(self.device) or 0
        if need > free:
            raise RefineError(
                f"The local model needs about {need / GIB:.1f} GiB of GPU memory and only {free / GIB:.1f} GiB is "
                "free next to the video model. Use a memory mode that offloads the video model, or the openai backend."
            )
        model.to(self.device)

    def _after_use(self, video_plan: str | None) -> str:
        model = self._model
        if model is None:
            return "unload"
        on_gpu = self.model_device is not None and self.model_device.type == "cuda"
        action = placement_after_use(
            self.device.type, self.config.local_offload, video_plan, free_vram(self.device) if on_gpu else None
        )
        if action == "unload":
            self.unload()
        elif action == "cpu" and on_gpu:
            model.to("cpu")
            torch.cuda.empty_cache()
        log.info("refiner model after use: %s", action)
        return action

    # ----- generate -------------------------------------------------------------------------------------------

    def complete(
        self,
        system: str,
        user: str,
        image: Image.Image | None = None,
        *,
        video_plan: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        status: Callable[[str], None] | None = None,
    ) -> tuple[str, str, dict[str, Any]]:
        """(raw reply, model id, info with timings, 'finish_reason', 'new_tokens', 'placement'). Raises RefineError."""
        vision = image is not None
        model_id = self.config.local_vl_model if vision else self.config.local_model
        status = status or (lambda _message: None)
        with self._lock:
            info: dict[str, Any] = {"timings": {}}
            try:
                info["timings"]["load"] = self._ensure(model_id, vision, status)
                t_move = time.perf_counter()
                self._onto_device()
                info["timings"]["to_device"] = time.perf_counter() - t_move
                status(f"writing with {model_id}")
                text = self._generate(system, user, image, should_stop, info)
            except torch.OutOfMemoryError:
                self.unload()
                raise RefineError(
                    f"Out of GPU memory while running {model_id}. Use a memory mode that offloads the video model, "
                    "or the openai backend."
                ) from None
            finally:
                t_place = time.perf_counter()
                info["placement"] = self.last_placement = self._after_use(video_plan)
                info["timings"]["offload"] = time.perf_counter() - t_place
        return text, model_id, info

    def _generate(
        self,
        system: str,
        user: str,
        image: Image.Image | None,
        should_stop: Callable[[], bool] | None,
        info: dict[str, Any],
    ) -> str:
        from transformers import MaxTimeCriteria, StoppingCriteriaList

        model, processor, cfg = self._model, self._processor, self.config
        if image is not None:
            img = image.convert("RGB")
            if max(img.size) > VL_IMAGE_MAX_SIDE:
                img = img.copy()
                img.thumbnail((VL_IMAGE_MAX_SIDE, VL_IMAGE_MAX_SIDE), Image.Resampling.LANCZOS)
            messages = [
                {"role": "system", "content": [{"type": "text", "text": system}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]},
            ]
            chat = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            inputs = processor(text=[chat], images=[img], return_tensors="pt")
            tokenizer = processor.tokenizer
        else:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            # enable_thinking=False: reasoning models (Qwen3) answer directly; other templates ignore it
            inputs = processor.apply_chat_template(
                messages, add_generation_prompt=True, return_dict=True, return_tensors="pt", enable_thinking=False
            )
            tokenizer = processor
        inputs = inputs.to(self.model_device)
        started = time.time()
        criteria = [MaxTimeCriteria(cfg.timeout, started)]
        if should_stop is not None:
            criteria.append(_StopFlag(should_stop))
        kwargs: dict[str, Any] = {
            "max_new_tokens": cfg.max_new_tokens,
            "stopping_criteria": StoppingCriteriaList(criteria),
            "do_sample": cfg.temperature > 0,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }
        if cfg.temperature > 0:
            kwargs.update(temperature=cfg.temperature, top_p=0.9)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)  # greedy: no sampling settings to warn about
        with torch.inference_mode():
            output = model.generate(**inputs, **kwargs)
        elapsed = time.time() - started
        new = output[0, inputs["input_ids"].shape[1] :]
        info["timings"]["generate"] = elapsed
        info["new_tokens"] = int(new.shape[0])
        if should_stop is not None and should_stop():
            info["finish_reason"] = "cancelled"
        elif elapsed > cfg.timeout:
            info["finish_reason"] = "time"
        elif new.shape[0] >= cfg.max_new_tokens:
            info["finish_reason"] = "length"
        else:
            info["finish_reason"] = "stop"
        return tokenizer.decode(new, skip_special_tokens=True)
