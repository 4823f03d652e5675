"""Any OpenAI-compatible chat-completions server (Ollama, vLLM, LM Studio, llama.cpp server, DashScope...).

Standard library only (urllib), so the engine needs no HTTP client package. The API key goes out only in the
Authorization header and is scrubbed from every message this module writes.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from PIL import Image

from .base import RefineError, RefinerConfig

log = logging.getLogger("wan_studio.refine")
IMAGE_MAX_SIDE = 1024  # vision models look at ~1 megapixel or less; a smaller upload is faster and cheaper


def image_data_url(image: Image.Image, max_side: int = IMAGE_MAX_SIDE) -> str:
    """A PNG data URL of the image, downscaled so its longer side is at most `max_side`."""
    img = image.convert("RGB")
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _is_loopback(host: str | None) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


class OpenAIBackend:
    """POSTs {base_url}/chat/completions; one retry on a failed connection, none on a time-out or an HTTP error."""

    def __init__(self, config: RefinerConfig):
        self.config = config

    @property
    def configured(self) -> str | None:
        """None when usable, otherwise what is missing (in the user's words)."""
        if not self.config.openai_base_url:
            return "no server: set WAN_OPENAI_BASE_URL (e.g. http://127.0.0.1:11434/v1)"
        if not self.config.openai_model:
            return "no model name: set WAN_OPENAI_MODEL"
        return None

    @property
    def url(self) -> str:
        base = self.config.openai_base_url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def _scrub(self, text: str) -> str:
        key = self.config.api_key
        return text.replace(key, "***") if key else text

    def _where(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    def complete(self, system: str, user: str, image: Image.Image | None = None) -> tuple[str, str, dict[str, Any]]:
        """(reply text, model name, info with 'finish_reason' and 'attempts'). Raises RefineError."""
        missing = self.configured
        if missing:
            raise RefineError(f"The openai backend is not set up: {missing}.")
        content: Any = user
        if image is not None:
            picture = {"type": "image_url", "image_url": {"url": image_data_url(image)}}
            content = [{"type": "text", "text": user}, picture]
        body = {
            "model": self.config.openai_model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
            "max_tokens": self.config.max_new_tokens,
            "temperature": self.config.temperature,
            "stream": False,
        }
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers)
        # A server on this machine is never behind a proxy; elsewhere the usual *_proxy variables apply.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(urllib.parse.urlsplit(self.url).hostname) else []
        opener = urllib.request.build_opener(*handlers)
        log.info("refining with %s at %s", self.config.openai_model, self._where())
        raw, attempts = self._send(opener, request, image is not None)
        text, finish = self._parse(raw)
        return text, self.config.openai_model, {"finish_reason": finish, "attempts": attempts}

    def _send(self, opener: urllib.request.OpenerDirector, request: urllib.request.Request, image: bool) -> tuple:
        timeout = self.config.timeout
        for attempt in (1, 2):
            try:
                with opener.open(request, timeout=timeout) as response:
                    return response.read(), attempt
            except urllib.error.HTTPError as exc:
                raise RefineError(self._http_error(exc, image)) from None
            except TimeoutError:
                raise RefineError(f"No reply from {self._where()} within {timeout:g} s.") from None
            except (urllib.error.URLError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError):
                    raise RefineError(f"No reply from {self._where()} within {timeout:g} s.") from None
                if attempt == 1:
                    log.info("connection to %s failed (%s); retrying once", self._where(), self._scrub(str(reason)))
                    time.sleep(0.5)
                    continue
                raise RefineError(
                    f"Could not connect to {self._where()} ({self._scrub(str(reason))}). Is the server running, and "
                    "is WAN_OPENAI_BASE_URL right?"
                ) from None
        raise AssertionError("unreachable")

    def _http_error(self, exc: urllib.error.HTTPError, image: bool) -> str:
        try:
            payload = exc.read().decode("utf-8", "replace")
        except OSError:
            payload = ""
        detail = payload
        try:
            err = json.loads(payload).get("error", payload)
            detail = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        except (ValueError, AttributeError):
            pass
        detail = self._scrub(" ".join(str(detail).split()))[:300] or exc.reason
        code, where = exc.code, self._where()
        if code in (401, 403):
            return f"The server at {where} refused the API key (HTTP {code}: {detail}). Check WAN_OPENAI_API_KEY."
        if code == 404:
            return (
                f"Not found at {where} (HTTP 404: {detail}). Check that the base URL ends in /v1 and that the model "
                f"{self.config.openai_model!r} exists on the server."
            )
        if code == 429:
            return f"The server at {where} is limiting requests (HTTP 429: {detail}). Wait a moment and try again."
        if 400 <= code < 500:
            hint = " If the model cannot read images, pick a vision model or refine without the image." if image else ""
            return f"The server at {where} rejected the request (HTTP {code}: {detail}).{hint}"
        return f"The server at {where} failed (HTTP {code}: {detail}). Try again, or check the server's log."

    def _parse(self, raw: bytes) -> tuple[str, str | None]:
        where = self._where()
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            snippet = self._scrub(raw[:80].decode("utf-8", "replace"))
            raise RefineError(f"The reply from {where} was not JSON (it began {snippet!r}).") from None
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise RefineError(
                f"The reply from {where} was not a chat completion (no choices[0].message.content)."
            ) from None
        if isinstance(content, list):  # some servers send content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content is not None and not isinstance(content, str):
            raise RefineError(f"The reply from {where} had a message content that is not text.")
        return content or "", choice.get("finish_reason")
