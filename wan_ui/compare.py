"""Side-by-side comparison of 2-4 videos played in sync: one play/pause and one scrub bar for all, and under each
video only the settings in which it differs from the others.

The page's HTML is replaced on every comparison, and scripts inside gr.HTML do not run, so the controls work by
event delegation from one script in the page's head (HEAD): it finds the comparison a control belongs to, keeps
every video on the first one's clock while they play, and seeks them all together.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from engine import SavedVideo

MIN_COMPARE, MAX_COMPARE = 2, 4
# What may differ between takes, in the order it is listed: (label, how to read it from the settings)
FIELDS: tuple[tuple[str, Any], ...] = (
    ("seed", lambda s: s.get("request", {}).get("seed")),
    ("wording", lambda s: s.get("request", {}).get("prompt")),
    ("negative prompt", lambda s: s.get("request", {}).get("negative_prompt")),
    ("model", lambda s: s.get("model")),
    ("LoRAs", lambda s: s.get("request", {}).get("loras")),
    ("steps", lambda s: s.get("request", {}).get("steps")),
    ("guidance", lambda s: s.get("request", {}).get("guidance")),
    ("guidance (low noise)", lambda s: s.get("request", {}).get("guidance_2")),
    ("shift", lambda s: s.get("request", {}).get("shift")),
    ("size", lambda s: "{width}×{height}".format(**{"width": None, "height": None, **s.get("request", {})})),
    ("frames", lambda s: s.get("request", {}).get("frames")),
    ("fps", lambda s: s.get("request", {}).get("fps")),
    ("weights", lambda s: (s.get("weights") or {}).get("transformer", {}).get("storage")),
    ("mark", lambda s: s.get("mark")),
)


def differences(settings: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    """For each video, the (label, value) pairs whose value is not the same in all of them."""
    out: list[list[tuple[str, str]]] = [[] for _ in settings]
    for label, read in FIELDS:
        values = [read(s or {}) for s in settings]
        if len({repr(v) for v in values}) > 1:
            for i, value in enumerate(values):
                out[i].append((label, "none" if value in (None, "") else str(value)))
    return out


def file_url(path: str) -> str:
    """Where the page loads a file of the outputs folder (served through Gradio's allowed_paths)."""
    return f"/gradio_api/file={quote(str(path))}"


def compare_html(videos: list[SavedVideo]) -> str:
    """The comparison view, or a line saying what to pick."""
    if not MIN_COMPARE <= len(videos) <= MAX_COMPARE:
        return f"<p class='wan-compare-empty'>Pick {MIN_COMPARE} to {MAX_COMPARE} videos to compare them.</p>"
    fps = max(int(v.request.get("fps") or 16) for v in videos)
    cells = []
    for video, diffs in zip(videos, differences([v.settings for v in videos]), strict=True):
        items = (
            "".join(f"<li><b>{html.escape(label)}</b>: {html.escape(value[:160])}</li>" for label, value in diffs)
            or "<li>same settings</li>"
        )
        cells.append(
            "<figure class='wan-compare-cell'>"
            f"<video src='{html.escape(file_url(str(video.path)))}' muted playsinline preload='auto'></video>"
            f"<figcaption><div class='wan-compare-name'>{html.escape(video.path.name)}</div>"
            f"<ul>{items}</ul></figcaption></figure>"
        )
    return (
        f"<div class='wan-compare' data-fps='{fps}'>"
        "<div class='wan-compare-controls'>"
        "<button type='button' class='wan-compare-play'>Play all</button>"
        "<input type='range' class='wan-compare-scrub' min='0' max='1000' step='1' value='0' "
        "aria-label='Position in all videos'>"
        "<span class='wan-compare-time'>0.00 s</span></div>"
        f"<div class='wan-compare-grid' style='grid-template-columns: repeat({len(videos)}, 1fr)'>"
        + "".join(cells)
        + "</div></div>"
    )


COMPARE_CSS = """
.wan-compare-controls { display: flex; gap: 12px; align-items: center; margin-bottom: 8px; }
.wan-compare-scrub { flex: 1; }
.wan-compare-grid { display: grid; gap: 8px; }
.wan-compare-cell { margin: 0; }
.wan-compare-cell video { width: 100%; background: #000; border-radius: 6px; }
.wan-compare-cell ul { margin: 4px 0 0 1em; padding: 0; font-size: 0.9em; }
.wan-compare-name { font-size: 0.8em; opacity: 0.7; word-break: break-all; }
"""

HEAD = """
<script>
(() => {
  const videosOf = (group) => Array.from(group.querySelectorAll("video"));
  const lengthOf = (group) => Math.min(...videosOf(group).map((v) => v.duration || 0));
  const show = (group, t) => {
    const label = group.querySelector(".wan-compare-time");
    if (label) label.textContent = t.toFixed(2) + " s";
    const scrub = group.querySelector(".wan-compare-scrub");
    const length = lengthOf(group);
    if (scrub && length > 0 && document.activeElement !== scrub) scrub.value = Math.round((1000 * t) / length);
  };
  const seekAll = (group, t) => { videosOf(group).forEach((v) => { v.currentTime = t; }); show(group, t); };
  const stopAll = (group) => {
    const vs = videosOf(group);
    vs.forEach((v) => v.pause());
    if (vs.length) seekAll(group, vs[0].currentTime);
    const button = group.querySelector(".wan-compare-play");
    if (button) button.textContent = "Play all";
  };
  document.addEventListener("click", (event) => {
    const button = event.target.closest(".wan-compare-play");
    if (!button) return;
    const group = button.closest(".wan-compare");
    const vs = videosOf(group);
    if (!vs.length) return;
    if (vs[0].paused) {
      const t = vs[0].ended ? 0 : vs[0].currentTime;
      seekAll(group, t);
      vs.forEach((v) => v.play());
      button.textContent = "Pause all";
    } else {
      stopAll(group);
    }
  });
  document.addEventListener("input", (event) => {
    const scrub = event.target.closest(".wan-compare-scrub");
    if (!scrub) return;
    const group = scrub.closest(".wan-compare");
    videosOf(group).forEach((v) => v.pause());
    const button = group.querySelector(".wan-compare-play");
    if (button) button.textContent = "Play all";
    seekAll(group, (lengthOf(group) * scrub.value) / 1000);
  });
  document.addEventListener("ended", (event) => {
    const group = event.target.closest && event.target.closest(".wan-compare");
    if (group) stopAll(group);
  }, true);
  const follow = () => {  // the first video is the clock: the others are pulled to it when they drift
    document.querySelectorAll(".wan-compare").forEach((group) => {
      const [lead, ...rest] = videosOf(group);
      if (!lead || lead.paused) return;
      const frame = 1 / (Number(group.dataset.fps) || 16);
      rest.forEach((v) => {
        if (Math.abs(v.currentTime - lead.currentTime) > frame / 2) v.currentTime = lead.currentTime;
        if (v.paused) v.play();
      });
      show(group, lead.currentTime);
    });
    requestAnimationFrame(follow);
  };
  requestAnimationFrame(follow);
})();
</script>
"""
