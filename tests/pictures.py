"""Pictures the hostile-input tests send: built on the spot, never stored in the repository."""

from __future__ import annotations

import zlib
from pathlib import Path


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid greyscale PNG of width x height zero pixels: a few hundred KB on disk, width*height bytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
