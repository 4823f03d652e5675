"""The LoRA library: what is in the LoRA folder, what each LoRA fits and recommends, and a job's LoRA choice.

A LoRA is one .safetensors file, or a folder holding a high-noise and a low-noise file for the two A14B experts
(as the distilled pairs ship). NAME.json beside the file (for a folder: NAME/NAME.json) is data, never code:
{"models": [...], "triggers": [...], "recommended": {"steps": 4, "guidance": 1.0, ...}, "distilled": true}; the
recommended settings may also sit at the top level. What it holds that the studio cannot read is said, not fatal.
Known published LoRAs that are not downloaded yet come from presets/loras.json (lora_hub.py fetches them).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..catalog import PRESETS_DIR, ModelSpec, builtin_specs
from ..errors import RequestError

log = logging.getLogger("wan_studio.loras")

RECOMMENDABLE = ("steps", "guidance", "guidance_2", "shift")  # request fields a LoRA may recommend
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")  # weights that can run code when loaded: never read
EXPERTS = ("transformer", "transformer_2")  # high-noise, low-noise
MAX_STRENGTH = 4.0


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA the studio knows: in the folder, or published and downloadable (preset)."""

    name: str
    kind: str  # "file" or "pair"
    files: dict[str, Path]  # "file": {"file": path}; "pair": {"high": path, "low": path}
    models: tuple[str, ...] = ()  # catalog ids or families it fits; () = not said
    triggers: tuple[str, ...] = ()
    recommended: dict[str, float] = field(default_factory=dict)
    distilled: bool = False  # a few-step LoRA: the page's "Fast" quality picks it
    problem: str = ""  # why it cannot be used (a pickle, a pair missing a half); "" when usable
    notes: str = ""  # what of its NAME.json was ignored and why (a typo, a wrong type); it stays usable
    preset: dict[str, Any] | None = None  # Hub repo and files when it comes from presets/loras.json
    downloaded: bool = True

    def fits(self, spec: ModelSpec) -> bool:
        """Can go into this model: a pair needs two experts, and its data (when it names models) names this one,
        by catalog id or family (a folder of an A14B model fits too)."""
        if self.kind == "pair" and not spec.moe:
            return False
        if not self.models:
            return True
        if spec.id in self.models or spec.family in self.models:
            return True
        kind = (spec.family, spec.moe, spec.tiny)
        catalog = builtin_specs()
        return any((s.family, s.moe, s.tiny) == kind for m in self.models if (s := catalog.get(m)))

    def listing(self) -> dict[str, Any]:
        """What /list_loras returns for it."""
        return {
            "name": self.name,
            "kind": self.kind,
            "models": list(self.models),
            "recommended": dict(self.recommended),
            "triggers": list(self.triggers),
            "distilled": self.distilled,
            "downloaded": self.downloaded,
            "usable": not self.problem,
            "problem": self.problem or self.notes,
        }


@dataclass(frozen=True)
class LoraPick:
    """One LoRA of a job: which file goes into which expert, and with what strength."""

    entry: LoraEntry
    strengths: dict[str, float]  # expert -> strength ("transformer" only on single-expert models)

    def attachments(self) -> list[tuple[str, Path, float]]:
        """(expert, file, strength) for each expert it changes; a strength of 0 attaches nothing."""
        files = self.entry.files
        out = []
        for expert, strength in self.strengths.items():
            if strength == 0:
                continue
            path = files["file"] if self.entry.kind == "file" else files["high" if expert == EXPERTS[0] else "low"]
            out.append((expert, path, strength))
        return out

    def text(self) -> str:
        """Back to the selection syntax (NAME, NAME:S or NAME:HIGH:LOW)."""
        values = list(self.strengths.values())
        if len(values) == 2 and values[0] != values[1]:
            return f"{self.entry.name}:{_num(values[0])}:{_num(values[1])}"
        return self.entry.name if values[0] == 1.0 else f"{self.entry.name}:{_num(values[0])}"


def _num(value: float) -> str:
    return f"{value:g}"


DATA_KEYS = ("models", "triggers", "recommended", "distilled", *RECOMMENDABLE)  # what a NAME.json may hold
PRESET_KEYS = ("repo", "revision", "files")  # presets/loras.json adds where to fetch it from
_said: set[str] = set()  # problems already logged: the folder is read on every use, the terminal hears each once


def _read_json(path: Path) -> tuple[dict[str, Any], list[str]]:
    """(data, problems) of a NAME.json: a file that cannot be read or parsed gives no data and says why."""
    if not path.is_file():
        return {}, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        return {}, [f"{path.name} could not be read ({reason}): its settings are ignored"]
    except ValueError as exc:
        where = f"line {exc.lineno}, column {exc.colno}: " if isinstance(exc, json.JSONDecodeError) else ""
        said = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return {}, [f"{path.name} is not valid JSON ({where}{said}): its settings are ignored"]
    if not isinstance(data, dict):
        return {}, [f"{path.name} must hold one JSON object {{...}}: its settings are ignored"]
    return data, []


def _strings(key: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if value is None or not all(isinstance(v, str) for v in items):
        problems.append(f"“{key}” must be a word or a list of words, got {json.dumps(value)} (ignored)")
        return ()
    return tuple(items)


def _recommended(key: str, value: Any, problems: list[str]) -> int | float | None:
    """A recommended setting, or None (and a problem) when it is not a number of the right kind."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if key == "steps" and number and float(value).is_integer() and value >= 1:
        return int(value)
    if key != "steps" and number:
        return float(value)
    kind = "a whole number of steps" if key == "steps" else "a number"
    problems.append(f"“{key}” must be {kind}, got {json.dumps(value)} (ignored)")
    return None


def _unknown(key: str, known: tuple[str, ...]) -> str:
    import difflib  # only for the rare typo

    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean “{close[0]}”?" if close else f"; the studio reads {', '.join(DATA_KEYS)}"
    return f"unknown key “{key}” (ignored{hint})"


def _metadata(data: dict[str, Any], extra_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of a NAME.json (or a preset) the studio reads, and `notes`: what it could not read, in words.

    Recommended settings may sit at the top level or under "recommended" (people write both); a typo or a value of
    the wrong type is ignored and said, never fatal: the LoRA stays usable.
    """
    problems: list[str] = []
    known = (*DATA_KEYS, *extra_keys)
    problems += [_unknown(key, known) for key in data if key not in known]
    nested = data.get("recommended", {})
    if not isinstance(nested, dict):
        problems.append(f'“recommended” must be an object such as {{"steps": 4}}, got {json.dumps(nested)} (ignored)')
        nested = {}
    problems += [
        _unknown(f"recommended.{key}", tuple(f"recommended.{k}" for k in RECOMMENDABLE))
        for key in nested
        if key not in RECOMMENDABLE
    ]
    recommended: dict[str, float] = {}
    for key in RECOMMENDABLE:
        for where, source in (("top level", data), ("recommended", nested)):
            if key in source and (value := _recommended(key, source[key], problems)) is not None:
                if key in recommended and recommended[key] != value:
                    problems.append(f"“{key}” is given twice with different values; {where}'s {value:g} is used")
                recommended[key] = value
    distilled = data.get("distilled", False)
    if not isinstance(distilled, bool):
        problems.append(f"“distilled” must be true or false, got {json.dumps(distilled)} (ignored)")
        distilled = False
    return {
        "models": _strings("models", data["models"], problems) if "models" in data else (),
        "triggers": _strings("triggers", data["triggers"], problems) if "triggers" in data else (),
        "recommended": recommended,
        "distilled": distilled,
        "notes": "; ".join(problems),
    }


def _read_metadata(path: Path) -> dict[str, Any]:
    """A LoRA's NAME.json as LoraEntry fields; its problems are logged once, in one line."""
    data, problems = _read_json(path)
    meta = _metadata(data)
    notes = "; ".join(x for x in (*problems, meta["notes"] and f"{path.name}: {meta['notes']}") if x)
    if notes:
        _say_once(f"LoRA {path.stem}: {notes}", where=str(path))
    return {**meta, "notes": notes}


def _say_once(message: str, where: str = "") -> None:
    """One terminal line per problem (and file) per process: the folder and presets are read on every use."""
    if f"{where}:{message}" not in _said:
        _said.add(f"{where}:{message}")
        log.warning("%s", message)


def _folder_files(folder: Path) -> tuple[str, dict[str, Path], str]:
    """(kind, files, problem) of a LoRA folder: a high/low pair, or a single file kept in its own folder."""
    found = sorted(p for p in folder.rglob("*.safetensors") if p.is_file() and ".cache" not in p.parts)
    high = [p for p in found if "high_noise" in p.name]
    low = [p for p in found if "low_noise" in p.name]
    if len(high) == 1 and len(low) == 1:
        return "pair", {"high": high[0], "low": low[0]}, ""
    if len(found) == 1 and not high and not low:
        return "file", {"file": found[0]}, ""
    if not found:
        return "pair", {}, "the folder holds no .safetensors file"
    if not high or not low:
        missing = "high_noise" if not high else "low_noise"
        return "pair", {}, f"the folder has no .safetensors file whose name contains “{missing}”"
    return "pair", {}, "the folder has more than one high_noise or low_noise file; keep one of each"


def scan_folder(folder: Path) -> dict[str, LoraEntry]:
    """Every LoRA in the folder by name (a missing folder is an empty library)."""
    entries: dict[str, LoraEntry] = {}
    if not folder.is_dir():
        return entries
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            meta = _read_metadata(path / f"{path.name}.json")
            kind, files, problem = _folder_files(path)
            entries[path.name] = LoraEntry(path.name, kind, files, problem=problem, **meta)
        elif path.suffix == ".safetensors":
            meta = _read_metadata(path.with_suffix(".json"))
            entries[path.stem] = LoraEntry(path.stem, "file", {"file": path}, **meta)
        elif path.suffix.lower() in PICKLE_SUFFIXES and path.stem not in entries:
            problem = (
                f"{path.name} is a PyTorch pickle file; the studio loads LoRAs only from .safetensors files, because "
                "a pickle can run code when it is opened. Get the .safetensors version of this LoRA"
            )
            entries[path.stem] = LoraEntry(path.stem, "file", {"file": path}, problem=problem)
    return entries


def load_presets(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """presets/loras.json: the published LoRAs the studio can fetch by name."""
    data, problems = _read_json(path or PRESETS_DIR / "loras.json")
    for problem in problems:
        _say_once(f"LoRA presets: {problem}")
    return {name: item for name, item in (data.get("loras") or {}).items() if isinstance(item, dict)}


class LoraLibrary:
    """The LoRA folder plus the known downloadable LoRAs. Re-read on every use: users drop files in while it runs."""

    def __init__(self, folder: str | Path, presets: Path | None = None):
        self.folder = Path(folder)
        self.presets_path = presets

    def entries(self) -> dict[str, LoraEntry]:
        found = scan_folder(self.folder)
        for name, preset in load_presets(self.presets_path).items():
            if name in found:
                continue
            target = self.folder / name
            kind = "pair" if "high" in preset.get("files", {}) else "file"
            files = {part: target / file for part, file in preset.get("files", {}).items()}
            meta = _metadata(preset, PRESET_KEYS)
            found[name] = LoraEntry(name, kind, files, preset=preset, downloaded=False, **meta)
        return found

    def listing(self) -> list[dict[str, Any]]:
        return [entry.listing() for entry in self.entries().values()]

    def fast_lora(self, spec: ModelSpec) -> str | None:
        """The few-step LoRA for this model: one in the folder first, else a known published one."""
        candidates = [e for e in self.entries().values() if e.distilled and not e.problem and e.fits(spec)]
        candidates.sort(key=lambda e: (not e.downloaded, e.name))
        return candidates[0].name if candidates else None

    def pick(self, selection: str | None, spec: ModelSpec) -> tuple[LoraPick, ...]:
        """Parse "NAME, NAME:STRENGTH, NAME:HIGH:LOW" against the library and the model. Raises RequestError."""
        items = [part.strip() for part in (selection or "").split(",") if part.strip()]
        if not items:
            return ()
        entries = self.entries()
        picks: list[LoraPick] = []
        for item in items:
            name, *numbers = [p.strip() for p in item.split(":")]
            entry = entries.get(name)
            if entry is None:
                known = ", ".join(sorted(entries)) or f"none yet (the LoRA folder {self.folder} is empty)"
                raise RequestError("loras", f"There is no LoRA named “{name}”. LoRAs you can use: {known}.")
            if any(p.entry.name == name for p in picks):
                raise RequestError("loras", f"The LoRA {name} is chosen twice; choose it once.")
            if entry.problem:
                raise RequestError("loras", f"The LoRA {name} cannot be used: {entry.problem}.")
            if entry.kind == "pair" and not spec.moe:
                raise RequestError(
                    "loras",
                    f"The LoRA {name} is a high-noise/low-noise pair for the two experts of an A14B model; "
                    f"{spec.label} has a single expert.",
                )
            if not entry.fits(spec):
                raise RequestError(
                    "loras", f"The LoRA {name} is made for {', '.join(entry.models)}, not for {spec.label}."
                )
            picks.append(LoraPick(entry, _strengths(name, numbers, spec.moe)))
        return tuple(picks)


def _strengths(name: str, numbers: list[str], moe: bool) -> dict[str, float]:
    if len(numbers) > 2 or (len(numbers) == 2 and not moe):
        form = "NAME:HIGH:LOW (one strength per expert)" if moe else "NAME:STRENGTH (this model has one expert)"
        raise RequestError("loras", f"“{name}:{':'.join(numbers)}” is not a LoRA choice; write {form}.")
    values = []
    for text in numbers or ["1"]:
        try:
            value = float(text)
        except ValueError:
            raise RequestError("loras", f"The strength of the LoRA {name} must be a number, got “{text}”.") from None
        if not math.isfinite(value) or abs(value) > MAX_STRENGTH:
            raise RequestError(
                "loras", f"The strength of the LoRA {name} must be between -{MAX_STRENGTH:g} and {MAX_STRENGTH:g}."
            )
        values.append(value)
    if not moe:
        return {EXPERTS[0]: values[0]}
    high, low = (values[0], values[0]) if len(values) == 1 else values
    return {EXPERTS[0]: high, EXPERTS[1]: low}


def recommend(request: Any, picks: tuple[LoraPick, ...], moe: bool) -> tuple[Any, dict[str, float], list[str]]:
    """Fill the fields the user left unset (None) from the chosen LoRAs' recommended settings.

    Returns the request, what was applied (field -> value) and the notice for the status line.
    """
    applied: dict[str, float] = {}
    sources: dict[str, str] = {}
    for pick in picks:
        for key, value in pick.entry.recommended.items():
            if getattr(request, key, None) is None and key not in applied and (moe or key != "guidance_2"):
                applied[key] = value
                sources[key] = pick.entry.name
    if moe and "guidance" in applied and "guidance_2" not in applied and request.guidance_2 is None:
        applied["guidance_2"] = applied["guidance"]  # a CFG-free LoRA means both experts run without CFG
        sources["guidance_2"] = sources["guidance"]
    if not applied:
        return request, {}, []
    names = {"steps": "steps", "guidance": "guidance", "guidance_2": "guidance (low-noise)", "shift": "shift"}
    by_lora: dict[str, list[str]] = {}
    for key, value in applied.items():
        by_lora.setdefault(sources[key], []).append(f"{names[key]} {_num(value)}")
    said = "; ".join(f"{', '.join(parts)} recommended by the LoRA {lora}" for lora, parts in by_lora.items())
    return replace(request, **applied), applied, [f"Using {said}."]
