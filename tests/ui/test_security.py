"""What the running studio serves: its outputs folder and Gradio's cache, nothing else; uploads are bounded."""

from __future__ import annotations

import os

import httpx
import pytest


@pytest.fixture(scope="module")
def served(app):
    """One finished video, a symlink to a file outside the outputs folder and one to a folder outside it."""
    app.client().predict(prompt="a locked door", steps=1, seed=77, api_name="/text_to_video")
    video = next(app.outputs.glob("*_77_a-locked-door.mp4"))
    links = [app.outputs / "escape.mp4", app.outputs / "escape-dir"]
    os.symlink("/etc/hostname", links[0])
    os.symlink("/etc", links[1])
    yield video
    for link in links:
        link.unlink()


def fetch(app, path: str) -> httpx.Response:
    return httpx.get(f"{app.url}gradio_api/file={path}", timeout=30)


def test_a_finished_video_is_served(app, served):
    reply = fetch(app, str(served))
    assert reply.status_code == 200 and reply.content[4:8] == b"ftyp"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "{outputs}/../../etc/passwd",
        "{outputs}/%2e%2e/%2e%2e/etc/passwd",
        "{outputs}/..%2f..%2fetc%2fpasswd",
        "%2fetc%2fpasswd",
        "app.py",
        "../app.py",
        "{root}/app.py",
        "{outputs}/escape.mp4",
        "{outputs}/escape-dir/passwd",
    ],
    ids=[
        "absolute",
        "traversal",
        "encoded-traversal",
        "encoded-slashes",
        "encoded-absolute",
        "relative",
        "relative-up",
        "source",
        "symlinked-file",
        "symlinked-folder",
    ],
)
def test_nothing_outside_the_outputs_folder_is_served(app, served, path):
    root = os.getcwd()
    reply = fetch(app, path.format(outputs=app.outputs, root=root))
    assert reply.status_code in (403, 404)
    assert b"root:" not in reply.content and b"import" not in reply.content


def test_an_upload_over_the_limit_is_refused(app):
    too_big = b"\x89PNG\r\n\x1a\n" + bytes(9 * 1024 * 1024)  # the UI tests' studio allows 8 MB
    reply = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("big.png", too_big, "image/png")}, timeout=60)
    assert reply.status_code == 413 and "maximum allowed size" in reply.text


def test_an_upload_under_the_limit_is_taken(app):
    reply = httpx.post(f"{app.url}gradio_api/upload", files={"files": ("small.png", b"x" * 1024)}, timeout=60)
    assert reply.status_code == 200
