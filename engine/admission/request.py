"""GenerationRequest and its validation against a model's spec, before any work starts."""

from __future__ import annotations

import math
import re
import secrets
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from ..catalog import ModelSpec
from ..errors import RequestError
from .source import SourceVideo, read_source, source_size
from .windows import MAX_PASSES, Window, check_overlap, continues, plan, who_continues

SEED_MAX = 2**32 - 1
MAX_PROMPT_CHARS = 50_000  # the text encoder reads 512 tokens; a hundred times more is never meant
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 controls except tab, CR, LF
MAX_IMAGE_PIXELS = 100_000_000  # above any camera's default output; decoded RGB it is 300 MB of memory
IMAGE_FORMATS = "PNG, JPEG, WebP, BMP, TIFF or GIF"


@dataclass(frozen=True)
class GenerationRequest:
    """What the user asked for. None means "the model's default"; seed -1 means random."""

    prompt: str = ""
    negative_prompt: str | None = None
    image: Any = None  # PIL image or a path to one
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_2: float | None = None
    shift: float | None = None
    boundary: float | None = None  # MoE: the fraction of the noise schedule the high-noise expert runs
    seed: int = -1
    loras: str | None = None  # "NAME, NAME:STRENGTH, NAME:HIGH:LOW" from the LoRA library (loras.py)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata kept with the video (refiner output...)
    last_image: Any = None  # I2V-A14B: the picture the video ends on (PIL image or a path)
    video: Any = None  # a video to continue (a path): `frames` is then the frames to add
    overlap: int | None = None  # frames of what is made so far each new window starts from (long videos, extensions)
    color_match: bool | None = None  # match each new window's colours to where the continuation started (default on)

    def settings(self) -> dict[str, Any]:
        """The request as plain JSON-able values (the pictures and the source video are left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in MEDIA_FIELDS}


MEDIA_FIELDS = ("image", "last_image", "video")


@dataclass(frozen=True)
class ValidRequest:
    """A request with every value resolved and inside the model's bounds."""

    request: GenerationRequest  # all fields concrete (seed >= 0)
    image: Image.Image | None  # RGB, upright
    notices: tuple[str, ...]
    loras: tuple = ()  # LoraPick per chosen LoRA (Engine fills it from its library)
    recommended: dict[str, float] = field(default_factory=dict)  # settings the LoRAs recommended and got
    last_image: Image.Image | None = None  # RGB, upright
    source: SourceVideo | None = None  # the video an extension continues
    windows: tuple[Window, ...] = ()  # a long video or an extension, window by window; () for one pass

    @property
    def total_frames(self) -> int:
        """Frames of the finished video: an extension's source and what it adds, else the frames asked for."""
        return self.request.frames + (self.source.frames if self.source is not None else 0)

    @property
    def pass_frames(self) -> int:
        """The most frames one pass of the model makes for this request (what memory is planned for)."""
        return max((w.frames for w in self.windows), default=self.request.frames)


def clean_text(name: str, text: str) -> str:
    """Control characters out (tabs and line breaks stay); refuse text far beyond what the encoder reads.

    Emoji, right-to-left scripts and Chinese pass unchanged: the tokenizer takes any Unicode.
    """
    if len(text) > MAX_PROMPT_CHARS:
        raise RequestError(
            name,
            f"The {name.replace('_', ' ')} is {len(text):,} characters long; the studio takes up to "
            f"{MAX_PROMPT_CHARS:,}, and the model reads only about the first 512 tokens (a few hundred words).",
        )
    return _CONTROL.sub("", text)


def _number(name: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = str(value).strip()
        try:
            value = int(text) if kind is int and re.fullmatch(r"[+-]?\d+", text) else float(text)  # "1e3" too
        except (TypeError, ValueError):
            raise RequestError(name, f"{name} must be a number, got {value!r}.") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(name, f"{name} must be a finite number, got {value}.")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise RequestError(name, f"{name} must be a whole number, got {value}.")
        return int(value)
    return float(value)


def _in_range(name: str, value: float, bounds: tuple[float, float], unit: str = "") -> None:
    low, high = bounds
    if value < low:
        raise RequestError(name, f"{name} must be at least {low}{unit}; got {value}{unit}.")
    if value > high:
        raise RequestError(name, f"{name} must be at most {high}{unit}; got {value}{unit}.")


def load_image(image: Any) -> Image.Image:
    """Any PIL image or image file -> an upright RGB image (alpha on white, greyscale, palette, 16-bit).

    A file's size is read from its header and refused before its pixels are decoded (decompression bombs).
    """
    if isinstance(image, (str, Path)):
        img = _read_image_file(Path(image))
    elif isinstance(image, Image.Image):
        img = image
    else:
        raise RequestError("image", f"image must be a picture or a path to one, got {type(image).__name__}.")
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, KeyError):
        pass  # broken EXIF: keep the pixels as stored
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")  # 16-bit -> 8-bit keeping the brightness
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _read_image_file(path: Path) -> Image.Image:
    """Header first (type and size), then the pixels; every failure in the user's words, never the server path."""
    try:
        if path.stat().st_size == 0:
            raise RequestError("image", "The image file is empty (0 bytes). Choose the picture again.")
    except OSError:
        raise RequestError("image", "The image file could not be found. Upload it again.") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below decides
        try:
            with Image.open(path) as opened:
                pixels = opened.width * opened.height
                if pixels > MAX_IMAGE_PIXELS:
                    raise _too_large(pixels, f"{opened.width}x{opened.height}")
                opened.seek(0)  # an animation starts from its first frame
                opened.load()
                return opened.copy()
        except RequestError:
            raise
        except Image.DecompressionBombError as exc:  # Pillow's own guard, at open, above twice its limit
            found = re.search(r"\((\d+) pixels\)", str(exc))
            raise _too_large(int(found.group(1)) if found else None, None) from None
        except UnidentifiedImageError:
            raise RequestError(
                "image", f"That file is not a picture the studio can read. Use a {IMAGE_FORMATS} image."
            ) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            detail = "it is cut short" if "truncated" in str(exc) else "its data is damaged"
            raise RequestError(
                "image", f"The image could not be read: {detail}. Save or export it again and retry."
            ) from None


def _too_large(pixels: int | None, size: str | None) -> RequestError:
    shown = f"{size}, " if size else ""
    of = f" is {shown}{pixels / 1e6:.0f} megapixels" if pixels else " is too large"
    return RequestError(
        "image",
        f"The image{of}; the studio takes pictures up to {MAX_IMAGE_PIXELS // 1_000_000} megapixels. "
        "Resize it (the video is at most about 1 megapixel anyway) and try again.",
    )


def _nearest(value: float, multiple: int) -> int:
    """Nearest multiple, halves rounded up (Python's round() would send 840/16 down to 832)."""
    return int(math.floor(value / multiple + 0.5)) * multiple


def fit_to_area(aspect: float, area: int, multiple: int, side: tuple[int, int]) -> tuple[int, int]:
    """(width, height) with the given aspect ratio, about the given area, on the multiple, within the sides."""
    width = math.sqrt(area * aspect)
    height = width / aspect
    low = math.ceil(side[0] / multiple) * multiple
    high = side[1] // multiple * multiple

    def snap(v: float) -> int:
        return min(max(_nearest(v, multiple), low), high)

    return snap(width), snap(height)


def validate(request: GenerationRequest, spec: ModelSpec) -> ValidRequest:
    """Resolve defaults, snap frames and sizes, refuse what is out of bounds. Raises RequestError."""
    notices: list[str] = []
    lim = spec.limits

    if not isinstance(request.prompt, str) and request.prompt is not None:
        raise RequestError("prompt", f"prompt must be text, got {type(request.prompt).__name__}.")
    prompt = clean_text("prompt", request.prompt or "")
    if request.image is None and request.video is None and spec.requires_image:
        raise RequestError("image", f"{spec.id} makes video from an image: add an image to animate.")
    if request.image is not None and not spec.accepts_image:
        raise RequestError("image", f"{spec.id} makes video from text only; choose an image-to-video model.")
    if not prompt.strip() and request.image is None and request.video is None:
        raise RequestError("prompt", "Write a prompt: describe the scene and the motion you want.")
    negative = spec.negative_prompt if request.negative_prompt is None else request.negative_prompt
    if not isinstance(negative, str):
        raise RequestError("negative_prompt", "negative_prompt must be text.")
    negative = clean_text("negative_prompt", negative)

    source, overlap = None, None
    if request.video is not None:
        if not continues(spec):
            raise RequestError("video", f"{who_continues(spec)}.")
        if request.image is not None:
            raise RequestError("image", "An extension starts from the video's last frame: leave the image out.")
    if request.video is not None or request.overlap is not None:
        overlap = check_overlap(spec, _number("overlap", 1 if request.overlap is None else request.overlap, int),
                                spec.window_frames)  # fmt: skip
    if request.video is not None:
        source = read_source(request.video)
        frames = _added_frames(request, spec, overlap, notices)
        if source.frames < overlap:
            raise RequestError(
                "video", f"The video has {source.frames} frames; continuing it with overlap {overlap} needs at least "
                f"{overlap}. Use a longer video or a smaller overlap."
            )  # fmt: skip
    else:
        frames = _frames(request, spec, notices)
    windowed = source is not None or frames > lim.frames[1]
    if overlap is not None and not windowed:
        notices.append(f"overlap is used by long videos and extensions only: {frames} frames are one pass.")
    color_match = _flag("color_match", True if request.color_match is None else request.color_match)

    image = load_image(request.image) if request.image is not None else None
    last_image = None
    if request.last_image is not None:
        if spec.family != "i2v":
            raise RequestError(
                "last_image",
                f"{spec.id} cannot pin a last frame: its diffusers pipeline ignores a last image, so the studio "
                "refuses it rather than leave it out unsaid. First-and-last-frame videos need I2V-A14B.",
            )
        try:
            last_image = load_image(request.last_image)
        except RequestError as exc:
            raise RequestError("last_image", str(exc).replace("The image", "The last image")) from None
    width = _number("width", spec.width if request.width is None else request.width, int)
    height = _number("height", spec.height if request.height is None else request.height, int)
    _in_range("width", width, lim.side, " px")
    _in_range("height", height, lim.side, " px")
    if source is not None:
        area = width * height if request.width is not None or request.height is not None else None
        (width, height), said = source_size(source, spec, area, fit_to_area)
        if said:
            notices.append(said)
    elif image is not None:
        aspect = image.width / image.height
        fitted = fit_to_area(aspect, width * height, spec.multiple, lim.side)
        if fitted != (width, height):
            notices.append(f"Size follows the image's aspect ratio: {width}x{height} became {fitted[0]}x{fitted[1]}.")
        width, height = fitted
        if abs(math.log((width / height) / aspect)) > math.log(1.1):  # more than 10% off the picture's shape
            notices.append(
                f"The picture is {image.width}x{image.height} (aspect {aspect:.2f}) but at this size the nearest "
                f"{spec.multiple}-pixel sizes give {width}x{height} (aspect {width / height:.2f}): the video will not "
                "keep its shape. Choose a larger size to keep it."
            )
    else:
        m = spec.multiple
        snapped = (max(m, _nearest(width, m)), max(m, _nearest(height, m)))
        if snapped != (width, height):
            notices.append(
                f"Width and height must be multiples of {m} for {spec.id}: "
                f"{width}x{height} became {snapped[0]}x{snapped[1]}."
            )
            width, height = snapped
    if width * height > lim.max_area:
        raise RequestError(
            "size", f"size must be at most {lim.max_area} pixels per frame; got {width}x{height} = {width * height}."
        )

    fps = _number("fps", spec.fps if request.fps is None else request.fps, int)
    _in_range("fps", fps, lim.fps)
    if source is not None:  # one video, one frame rate: the source's
        played = min(max(round(source.fps), lim.fps[0]), lim.fps[1])
        if request.fps is not None and fps != played or abs(source.fps - played) > 0.01:
            notices.append(f"The source plays at {source.fps:g} fps: the whole video plays at {played} fps.")
        fps = played
    steps = _number("steps", spec.steps if request.steps is None else request.steps, int)
    _in_range("steps", steps, lim.steps)
    guidance = _number("guidance", spec.guidance if request.guidance is None else request.guidance, float)
    _in_range("guidance", guidance, lim.guidance)
    guidance_2 = None
    if spec.moe:
        g2 = request.guidance_2 if request.guidance_2 is not None else spec.guidance_2
        guidance_2 = _number("guidance_2", guidance if g2 is None else g2, float)
        _in_range("guidance_2", guidance_2, lim.guidance)
    elif request.guidance_2 is not None:
        notices.append(f"{spec.id} has a single expert: guidance_2 is not used.")
    shift = _number("shift", spec.shift if request.shift is None else request.shift, float)
    _in_range("shift", shift, lim.shift)
    boundary = None
    if spec.moe:
        boundary = _number("boundary", spec.boundary if request.boundary is None else request.boundary, float)
        if not 0.0 < boundary < 1.0:
            raise RequestError(
                "boundary", f"boundary must be between 0 and 1 (a fraction of the noise schedule); got {boundary}."
            )
    elif request.boundary is not None:
        notices.append(f"{spec.id} has a single expert: boundary is not used.")
    for key, notice in spec.differs.items():  # a folder's own default, used because the user left it unset
        if getattr(request, key, None) is None:
            notices.append(notice)

    seed = _number("seed", request.seed, int)
    _in_range("seed", seed, (-1, SEED_MAX))
    if seed == -1:
        seed = secrets.randbelow(SEED_MAX + 1)
    windows: list[Window] = []
    if windowed:
        windows, said = plan(frames, spec.window_frames, overlap or 1, source is None, prompt, seed)
        notices.extend(said)

    resolved = replace(
        request,
        prompt=prompt,
        negative_prompt=negative,
        image=None,
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        steps=steps,
        guidance=guidance,
        guidance_2=guidance_2,
        shift=shift,
        boundary=boundary,
        seed=seed,
        last_image=None,
        video=None,
        overlap=overlap if windowed else None,
        color_match=color_match if windowed else None,
    )
    return ValidRequest(
        request=resolved,
        image=image,
        notices=tuple(notices),
        last_image=last_image,
        source=source,
        windows=tuple(windows),
    )


def _frames(request: GenerationRequest, spec: ModelSpec, notices: list[str]) -> int:
    """The video's frames: one pass up to the model's longest, windows beyond it (up to MAX_PASSES passes)."""
    lim = spec.limits
    frames = _number("frames", spec.frames if request.frames is None else request.frames, int)
    longest = MAX_PASSES * lim.frames[1] if continues(spec) else lim.frames[1]
    if frames > lim.frames[1] and not continues(spec):
        raise RequestError(
            "frames",
            f"frames must be at most {lim.frames[1]} on {spec.id} (its longest pass); got {frames}. Longer "
            f"videos are made window by window: {who_continues(spec)}.",
        )
    _in_range("frames", frames, (lim.frames[0], longest))
    if frames % 4 != 1:
        snapped = max(lim.frames[0], min(longest - (longest - 1) % 4, _nearest(frames - 1, 4) + 1))
        notices.append(f"Frames must be 4k+1: {frames} frames became {snapped}.")
        frames = snapped
    return frames


def _added_frames(request: GenerationRequest, spec: ModelSpec, overlap: int, notices: list[str]) -> int:
    """An extension's new frames: a multiple of 4 (whole latent frames), one window's worth by default."""
    most = (MAX_PASSES * spec.limits.frames[1] - 1) // 4 * 4
    added = _number("frames", spec.window_frames - overlap if request.frames is None else request.frames, int)
    _in_range("frames", added, (4, most))
    if added % 4:
        snapped = min(most, max(4, _nearest(added, 4)))
        notices.append(f"An extension adds whole latent frames (4 video frames each): {added} frames became {snapped}.")
        return snapped
    return added


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise RequestError(name, f"{name} must be true or false, got {value!r}.")
