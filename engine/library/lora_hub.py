"""Fetching a published LoRA (presets/loras.json) into the LoRA folder on first use, with progress.

huggingface_hub does the download (resume, checksums, HF_ENDPOINT, tokens); the studio only says how far it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..errors import RequestError
from .loras import LoraEntry

log = logging.getLogger("wan_studio.lora_hub")

Report = Callable[[float, str], None]  # (fraction done, message)


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def missing_download(entry: LoraEntry) -> str | None:
    """Why a published LoRA cannot be fetched now (offline), or None when it is here or can be fetched."""
    if entry.downloaded or not offline():
        return None
    return (
        f"The LoRA {entry.name} is not downloaded yet and the studio is offline (HF_HUB_OFFLINE is set). "
        f"Go online once, or put its files from {entry.preset['repo']} into the LoRA folder as {entry.name}/."
    )


def fetch(entry: LoraEntry, folder: Path, report: Report) -> None:
    """Download the entry's files into folder/NAME/ and write NAME.json beside them. Raises RequestError."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from tqdm.auto import tqdm

    preset = entry.preset or {}
    target = folder / entry.name
    files = list(preset.get("files", {}).values())
    current = {"index": 0, "bytes": 0}

    class Progress(tqdm):  # huggingface_hub's own progress bar, read into the header's line instead of printed
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            current["bytes"] = 0

        def update(self, n=1):
            current["bytes"] += n or 0
            size = self.total or 0
            part = min(1.0, current["bytes"] / size) if size else 0.0
            shown = f": {current['bytes'] / 2**20:,.0f} of {size / 2**20:,.0f} MB" if size else ""
            which = f" (file {current['index'] + 1} of {len(files)})" if len(files) > 1 else ""
            report((current["index"] + part) / len(files), f"downloading the LoRA {entry.name}{which}{shown}")
            return super().update(n)

    report(0.0, f"downloading the LoRA {entry.name} from {preset.get('repo')}")
    try:
        for index, filename in enumerate(files):
            current["index"] = index
            hf_hub_download(
                preset["repo"], filename, revision=preset.get("revision"), local_dir=target, tqdm_class=Progress
            )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        log.error("LoRA %s: download from %s failed: %s: %s", entry.name, preset.get("repo"), type(exc).__name__, exc)
        raise RequestError(
            "loras",
            f"The LoRA {entry.name} could not be downloaded from {preset.get('repo')}: check the connection (or "
            "HF_TOKEN for a gated repo) and try again; the terminal has the details.",
        ) from None
    meta = {k: preset[k] for k in ("models", "triggers", "recommended", "distilled", "repo", "revision") if k in preset}
    (target / f"{entry.name}.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    report(1.0, f"LoRA {entry.name} downloaded")
