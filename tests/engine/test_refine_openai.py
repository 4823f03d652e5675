"""The openai backend against a real HTTP server on 127.0.0.1 speaking the chat-completions format."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from engine import PromptRefiner, RefinerConfig
from engine.refine import count_words

KEY = "sk-test-5ecret-key-0042"
SCENE = (
    "A cat walks along the beach at golden hour, its paws sinking into wet sand as small waves slide in and pull back. "
    "A medium tracking shot at eye level follows it from the side, the camera gliding at the same slow pace. Warm "
    "backlight rims its fur and sets the spray glowing. The cat pauses, lifts one paw, shakes off the water and "
    "walks on, tail swaying, while foam fizzes around its feet and the sun sinks toward the horizon in soft orange "
    "and pink. The composition keeps the cat on the left third with open beach ahead of it."
)


class ChatServer:
    """A chat-completions server whose next answers the test chooses; it records every request."""

    def __init__(self):
        self.behaviour = "good"
        self.reply = SCENE
        self.requests: list[dict] = []
        chat = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                chat.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                b = chat.behaviour
                if b == "drop-first" and len(chat.requests) == 1:
                    self.close_connection = True  # hang up without an answer
                    return
                if b == "slow":
                    time.sleep(1.5)
                if b == "500":
                    return self._send(500, {"error": {"message": "model crashed"}})
                if b == "401-echo":
                    return self._send(401, {"error": {"message": f"invalid api key {KEY}"}})
                if b == "malformed":
                    return self._send(200, b'{"choices": [oops')
                if b == "no-choices":
                    return self._send(200, {"id": "x", "object": "chat.completion"})
                reply = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": "test-model",
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": chat.reply}, "finish_reason": "stop"}
                    ],
                }
                return self._send(200, reply)

            def _send(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    chat = ChatServer()
    yield chat
    chat.close()


def make_refiner(url: str, **kw) -> PromptRefiner:
    kw.setdefault("timeout", 5.0)
    config = RefinerConfig(backend="openai", openai_base_url=url, openai_model="test-model", api_key=KEY, **kw)
    return PromptRefiner(config, device="cpu")


def test_a_good_reply_is_used_as_it_is(server):
    result = make_refiner(server.base_url).refine("a cat walks along the beach")
    assert (result.backend, result.fell_back, result.model, result.notice) == ("openai", False, "test-model", None)
    assert result.text == SCENE


def test_a_chatty_reply_is_cleaned(server):
    server.reply = f'Sure! Here is the refined prompt:\n\n"{SCENE}"\n\nNote: I added a sunset.'
    assert make_refiner(server.base_url).refine("a cat walks along the beach").text == SCENE


def test_the_request_is_a_chat_completion_with_the_system_prompt_and_the_idea(server):
    make_refiner(server.base_url, max_new_tokens=300).refine("a cat walks along the beach")
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    body = request["body"]
    assert (body["model"], body["max_tokens"], body["stream"]) == ("test-model", 300, False)
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "Wan2.2" in body["messages"][0]["content"]
    assert "a cat walks along the beach" in body["messages"][1]["content"]


def test_the_chinese_system_prompt_is_sent_for_chinese(server):
    server.reply = "一只猫沿着海滩散步，夕阳西下，海浪轻轻拍打着沙滩，镜头缓缓跟随。"
    result = make_refiner(server.base_url).refine("一只猫沿着海滩散步", language="zh")
    assert "中文" in server.requests[0]["body"]["messages"][0]["content"]
    assert result.backend == "openai"


def test_the_api_key_is_sent_as_a_bearer_token(server):
    make_refiner(server.base_url).refine("a cat walks along the beach")
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"


def test_the_api_key_appears_nowhere_else(server, caplog):
    caplog.set_level(logging.DEBUG)
    refiner = make_refiner(server.base_url)
    good = refiner.refine("a cat walks along the beach")
    server.behaviour = "401-echo"
    failed = refiner.refine("a cat walks along the beach")
    assert "refused the API key" in failed.notice
    for result in (good, failed):
        assert KEY not in repr(result) and KEY not in json.dumps(result.as_metadata())
    assert KEY not in repr(refiner) and KEY not in repr(refiner.config) and KEY not in str(refiner.config)
    assert KEY not in caplog.text
    assert KEY not in json.dumps(server.requests[0]["body"])


def test_a_server_error_falls_back_to_rules_with_the_status(server):
    server.behaviour = "500"
    result = make_refiner(server.base_url).refine("a cat walks along the beach")
    assert (result.backend, result.fell_back) == ("rules", True)
    assert "HTTP 500" in result.notice and "model crashed" in result.notice


def test_a_timeout_falls_back_to_rules_and_says_how_long_it_waited(server):
    server.behaviour = "slow"
    started = time.perf_counter()
    result = make_refiner(server.base_url, timeout=0.3).refine("a cat walks along the beach")
    assert time.perf_counter() - started < 1.4
    assert result.fell_back and "within 0.3 s" in result.notice
    assert len(server.requests) == 1  # a time-out is not retried


def test_malformed_json_falls_back_to_rules(server):
    server.behaviour = "malformed"
    result = make_refiner(server.base_url).refine("a cat walks along the beach")
    assert result.fell_back and "was not JSON" in result.notice


def test_json_that_is_not_a_chat_completion_falls_back_to_rules(server):
    server.behaviour = "no-choices"
    result = make_refiner(server.base_url).refine("a cat walks along the beach")
    assert result.fell_back and "not a chat completion" in result.notice


def test_an_unusable_reply_falls_back_to_rules(server):
    server.reply = "Sure!"
    result = make_refiner(server.base_url).refine("a cat walks along the beach")
    assert result.fell_back and "no usable prompt" in result.notice


def test_a_dropped_connection_is_retried_once(server):
    server.behaviour = "drop-first"
    result = make_refiner(server.base_url).refine("a cat walks along the beach")
    assert (result.backend, len(server.requests)) == ("openai", 2)


def test_a_refused_connection_falls_back_after_the_retry():
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = make_refiner(f"http://127.0.0.1:{port}/v1").refine("a cat walks along the beach")
    assert result.fell_back and "Could not connect" in result.notice


def test_an_image_goes_as_a_png_data_url_in_image_to_video(server):
    server.reply = "The woman turns toward the camera and smiles as her hair lifts in the breeze, the camera still."
    picture = Image.new("RGB", (2048, 1024), (200, 40, 40))
    make_refiner(server.base_url).refine("she turns and smiles", image=picture, mode="i2v")
    parts = server.requests[0]["body"]["messages"][1]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (1024, 512)  # downscaled to a 1024 px longer side
    assert any(p["type"] == "text" and "she turns and smiles" in p["text"] for p in parts)


def test_text_to_video_sends_no_image(server):
    make_refiner(server.base_url).refine("a cat walks along the beach", image=Image.new("RGB", (8, 8)))
    assert isinstance(server.requests[0]["body"]["messages"][1]["content"], str)


def test_a_long_reply_is_trimmed_to_200_words(server):
    server.reply = " ".join([SCENE] * 3)
    result = make_refiner(server.base_url).refine("a cat walks along the beach")
    assert count_words(result.text) <= 200 and result.text.endswith(".")
    assert "Trimmed" in result.notice


def test_the_style_words_are_put_first_when_the_model_leaves_them_out(server):
    result = make_refiner(server.base_url).refine("a cat walks along the beach", style="film_noir")
    assert result.text.startswith("Film noir style, black and white")
    assert "Film noir style" in server.requests[0]["body"]["messages"][1]["content"]


def test_a_missing_server_url_falls_back_with_what_to_set():
    result = PromptRefiner(RefinerConfig(), device="cpu").refine("a cat walks along the beach", backend="openai")
    assert result.fell_back and "WAN_OPENAI_BASE_URL" in result.notice
