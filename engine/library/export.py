"""A batch's takes as one zip: the MP4s and a sheet of their settings (CSV for a spreadsheet, JSON in full)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import zipfile
from pathlib import Path

from ..errors import RequestError
from .gallery import SavedVideo, list_videos

SHEET_COLUMNS = ("file", "take", "mark", "seed", "prompt", "model", "width", "height", "frames", "fps", "steps")


def batch_takes(folder: str | Path, batch_id: str) -> list[SavedVideo]:
    """The batch's videos in the folder, in take order."""
    takes = [v for v in list_videos(folder) if v.batch.get("id") == batch_id]
    return sorted(takes, key=lambda v: v.batch.get("index", 0))


def _sheet_row(video: SavedVideo) -> dict[str, object]:
    r = video.request
    return {
        "file": video.path.name,
        "take": f"{video.batch.get('index')}/{video.batch.get('count')}",
        "mark": video.mark or "",
        "seed": r.get("seed"),
        "prompt": r.get("prompt"),
        "model": video.model,
        **{k: r.get(k) for k in ("width", "height", "frames", "fps", "steps")},
    }


def export_batch(folder: str | Path, batch_id: str, into: str | Path, only_kept: bool = True) -> Path:
    """Write `into`/batch-ID-TIME.zip holding the kept takes (or all) and settings.csv / settings.json.

    Raises RequestError when the batch has no such takes. The zip is written under a hidden name and renamed when
    complete, and every export gets a new name: an earlier export is never overwritten.
    """
    takes = batch_takes(folder, batch_id)
    if not takes:
        raise RequestError("batch", f"No takes of batch {batch_id} are in the outputs folder.")
    chosen = [v for v in takes if v.mark == "kept"] if only_kept else takes
    if not chosen:
        raise RequestError(
            "batch", f"None of the {len(takes)} takes of this batch is marked kept yet: mark the ones to keep first."
        )
    target_dir = Path(into)
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    target = target_dir / f"batch-{batch_id}-{'kept' if only_kept else 'all'}-{stamp}.zip"
    temp = target_dir / f".{target.name}.partial"
    sheet = io.StringIO()
    writer = csv.DictWriter(sheet, fieldnames=SHEET_COLUMNS)
    writer.writeheader()
    for video in chosen:
        writer.writerow(_sheet_row(video))
    full = [{"file": v.path.name, "settings": v.settings} for v in chosen]
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_STORED) as archive:  # MP4s do not compress
            for video in chosen:
                archive.write(video.path, video.path.name)
            archive.writestr("settings.csv", sheet.getvalue())
            archive.writestr("settings.json", json.dumps(full, ensure_ascii=False, indent=2, default=str))
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target
