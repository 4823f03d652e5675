"""The terminal says each refused request in one line.

Gradio prints a full traceback for a request it refuses before any handler of ours runs (an API call naming a
server file instead of an upload raises InvalidPathError in its preprocessing; a malformed payload fails its
validation), and it offers no switch for that. This stream stands in for stderr and folds each traceback into the
line that says what was wrong; everything else passes through as written. WAN_TRACEBACKS=1 keeps full tracebacks.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from typing import TextIO

HEADER = "Traceback (most recent call last):"
CHAIN = ("During handling of the above exception", "The above exception was the direct cause")


class OneLineTracebacks(io.TextIOBase):
    def __init__(self, stream: TextIO):
        self.stream = stream
        self._lock = threading.Lock()
        self._mode = "pass"  # pass | traceback (inside one) | after (its line said; a chained one may follow)
        self._partial = ""

    def write(self, text: str) -> int:
        with self._lock:
            if self._mode == "pass" and not text.startswith(HEADER):
                self.stream.write(self._partial + text)  # as written (progress bars redraw without a newline)
                self._partial = ""
                return len(text)
            self._partial += text
            lines = self._partial.split("\n")
            self._partial = lines.pop()  # an unfinished line waits for its end
            for line in lines:
                self._line(line)
            return len(text)

    def _line(self, line: str) -> None:
        if self._mode == "after":
            if not line.strip() or line.startswith(CHAIN):
                return  # the gap before a chained traceback, said already in the first line
            if line.startswith(HEADER):
                self._mode = "chained"
                return
            self._mode = "pass"
            self.stream.write(line + "\n")
            return
        if line.startswith(HEADER):
            self._mode = "traceback" if self._mode == "pass" else self._mode
            return
        if not line or line[0].isspace():
            return  # a frame of the traceback
        if self._mode == "traceback":  # the exception and its message: the one line worth keeping
            when = time.strftime("%H:%M:%S")
            self.stream.write(f"{when} wan-studio: a request ended with an error: {line}\n")
        self._mode = "after"

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")


def fold_tracebacks() -> None:
    """Put the folding stream in front of stderr (unless WAN_TRACEBACKS=1 asks for full tracebacks)."""
    if os.environ.get("WAN_TRACEBACKS") != "1" and not isinstance(sys.stderr, OneLineTracebacks):
        sys.stderr = OneLineTracebacks(sys.stderr)
