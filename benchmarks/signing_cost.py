"""What content credentials cost at save time: seconds to sign a minute of video, and the bytes they add.

A one-minute MP4 is made with ffmpeg's test pattern at the studio's encoder settings (libx264, CRF as in
engine/output.py), then signed several times through engine.credentials (the local ES256 signer, in a temporary
config folder), timing each signature; reading and validating is timed too. No model is involved.

    python benchmarks/signing_cost.py [--width 1280] [--height 704] [--fps 24] [--seconds 60] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_video(path: Path, width: int, height: int, fps: int, seconds: int) -> None:
    import imageio_ffmpeg

    from engine.library.output import CRF

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi",
        "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
        "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(CRF), "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=704)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wan-sign-") as root:
        os.environ["WAN_STUDIO_CONFIG"] = str(Path(root) / "config")
        from engine.library.credentials import Credentials, check, facts_from_settings

        video = Path(root) / "minute.mp4"
        t0 = time.perf_counter()
        make_video(video, args.width, args.height, args.fps, args.seconds)
        encode = time.perf_counter() - t0
        credentials = Credentials()
        facts = facts_from_settings({"app_version": "bench", "model": "ti2v-5b"}, "minute.mp4")
        sign_times, read_times = [], []
        for run in range(args.runs):
            target = Path(root) / f"signed-{run}.mp4"
            t0 = time.perf_counter()
            credentials.sign(video, target, facts)
            sign_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = check(target)
            read_times.append(time.perf_counter() - t0)
            assert result.status == "signed", result
        size, signed_size = video.stat().st_size, target.stat().st_size
        per_minute = 60 / args.seconds
        print(f"video: {args.width}x{args.height} at {args.fps} fps, {args.seconds} s, {size / 2**20:.1f} MiB "
              f"(encoding it took {encode:.1f} s)")  # fmt: skip
        median = statistics.median(sign_times)
        print(f"sign: median {median:.3f} s (min {min(sign_times):.3f}, max {max(sign_times):.3f}) = "
              f"{median * per_minute:.3f} s per minute of video")  # fmt: skip
        print(f"read and validate: median {statistics.median(read_times):.3f} s")
        print(f"bytes added by the manifest: {signed_size - size} ({(signed_size - size) / size:.4%})")


if __name__ == "__main__":
    main()
