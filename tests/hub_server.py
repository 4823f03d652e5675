"""A small Hub-compatible file server on 127.0.0.1 for download tests (HF_ENDPOINT points huggingface_hub at it).

It answers what hf_hub_download asks: HEAD and GET on /{repo}/resolve/{revision}/{path}, with the commit, ETag and
size headers the Hub sends. Nothing else of the Hub is imitated.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@contextmanager
def hub_server(files: dict[str, dict[str, bytes]]):
    """Serve {repo_id: {path: content}}; yields the endpoint URL and the list of paths requested (GET)."""
    fetched: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _find(self) -> tuple[bytes | None, str]:
            path = unquote(self.path.split("?")[0]).lstrip("/")
            for repo, contents in files.items():
                prefix = f"{repo}/resolve/"
                if path.startswith(prefix):
                    _revision, _, name = path[len(prefix) :].partition("/")
                    return contents.get(name), name
            return None, path

        def _headers(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()

        def do_HEAD(self):  # noqa: N802 - http.server's naming
            body, _ = self._find()
            if body is None:
                self.send_error(404)
                return
            self._headers(body)

        def do_GET(self):  # noqa: N802
            body, name = self._find()
            if body is None:
                self.send_error(404)
                return
            fetched.append(name)
            self._headers(body)
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", fetched
    finally:
        server.shutdown()
        server.server_close()
