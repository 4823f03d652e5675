"""Workers: what holds a model and runs one job at a time, behind the queue.

A worker is told what to load (LoadOptions) and how to run (RunOptions), both plain data, and reports a job's
events on the job; a generation ends with the encoded MP4 under its hidden name (output.EncodedVideo), which the
studio signs and publishes. Nothing else crosses, so a worker can live in another process or on another machine.
LocalWorker is the one that runs in this process: a thread's worth of work on this machine's device.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from .. import events as ev
from ..catalog import ModelSpec, resolve_spec
from ..errors import ModelLoadError, OutputError, RequestError
from ..jobs import Job
from ..library.lora_hub import fetch
from ..library.loras import LoraLibrary
from ..library.output import EncodedVideo, VideoWriter, write_failure_message
from ..models.loading import ModelFolder, check_weights, component_dtypes, load_pipeline, open_model
from ..models.memory import (
    ExpertSwitch,
    MemoryPlan,
    apply_memory,
    free_vram,
    load_peaks,
    offload_folder,
    plan_memory,
    planning_size,
)
from ..models.placement import Placement, disk_free, host_ram_available, plan_placement
from ..models.single_file import SingleFile, hash_files
from ..models.storage import WeightOptions, record, summary
from ..models.tiny import cache_root
from .adapters import Adapters
from .generation import Cancelled, Loaded, decode, denoise, open_writer, video_settings
from .pipeline_call import truncation_notices
from .speed import SpeedOptions, apply_compile, apply_speed, fp8_storage_supported
from .views import prepare as prepare_view
from .windows import make_windows

log = logging.getLogger("wan_studio.engine")
# Loads in one process take turns: accelerate's init_empty_weights, which the loaders use, patches torch.nn.Module
# for the whole process while a model is built on the meta device, so two loads at once break each other ("Cannot
# copy out of meta tensor"). Running jobs side by side is fine.
_LOADING = threading.Lock()


@dataclass(frozen=True)
class LoadOptions:
    """What to load, as the studio wants it now; a worker holding anything else reloads before its next job."""

    model: str
    revision: str | None
    memory: str
    speed: SpeedOptions
    weights: WeightOptions
    host_ram: int | None  # RAM the loader may plan for (bytes); None: what the OS reports available then


@dataclass(frozen=True)
class RunOptions:
    """How a generation runs and where its partial MP4 is written (the studio publishes it from there)."""

    outputs: str
    preview_every: int
    filenames: str  # "prompt" or "plain" (output.video_stems)
    embed_prompt: bool  # the MP4's own copy of its settings holds texts
    loras: str  # the LoRA folder (published LoRAs are fetched into it on first use)
    lora_presets: str | None


@dataclass(frozen=True)
class WorkerState:
    state: str  # "not loaded", "loading", "ready", "failed"
    message: str  # progress or failure reason
    loaded: bool  # a model is loaded and ready for jobs
    memory: str = ""  # the memory mode its load chose, and why
    memory_reason: str = ""
    placement: str = ""  # where each component lives (placement.summary)
    storage: str = ""  # each component's storage type and size (storage.summary)
    activity: str = ""  # work besides loading the model, with its progress (a LoRA download)


@dataclass(frozen=True)
class Encoded:
    """A finished generation as a worker hands it back: the MP4 under its hidden name and its settings."""

    video: EncodedVideo
    settings: dict[str, Any]  # everything that made it (generation.video_settings); the studio adds credentials


class Worker(Protocol):
    """What the queue hands jobs to. run() blocks until the job ended; a generation returns its encoded video."""

    name: str

    def run(self, job: Job, load: LoadOptions, options: RunOptions) -> Encoded | None: ...

    def state(self) -> WorkerState: ...

    def stop(self) -> None: ...


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return f"{torch.cuda.get_device_name(device)} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
    return "CPU"


class LocalWorker:
    """A worker in this process: loads the model onto `device` and runs each job on the calling thread."""

    def __init__(self, device: torch.device, name: str = "local"):
        self.name = name
        self.device = device
        self.fault_injector: Callable[[str], None] | None = None  # test seam: called at each stage with its name
        # the studio's own checks when a job starts (room in its outputs folder: the queue may have waited)
        self.on_start: Callable[[Job], None] | None = None
        self.loaded: Loaded | None = None  # the pipeline and what its load decided (generation.py)
        self._options: LoadOptions | None = None  # what `loaded` was loaded with (or is loading)
        self._specs: dict[tuple[str, str | None], ModelSpec] = {}
        self._state, self._message, self._activity = "not loaded", "", ""
        self.decodes = True  # False: a job ends after denoising (a parallel rank other than the first)
        self.identity: dict[str, Any] | None = None  # which worker of a pool this is (saved with each video)

    # ----- the protocol ---------------------------------------------------------------------------------------

    def run(self, job: Job, load: LoadOptions, options: RunOptions) -> Encoded | None:
        if self._options is not None and self._options != load:  # the studio switched model or options
            self._unload()
        if job.kind == "load":
            self._run_load(job, load)
        elif job.kind == "refine":
            self.run_refine(job)
        else:
            return self._run_generate(job, load, options)
        return None

    def state(self) -> WorkerState:
        loaded = self.loaded
        return WorkerState(
            self._state,
            self._message,
            loaded is not None,
            memory=loaded.plan.mode if loaded else "",
            memory_reason=loaded.plan.reason if loaded else "",
            placement=loaded.placement.summary() if loaded and loaded.placement else "",
            storage=summary(loaded.storage) if loaded else "",
            activity=self._activity,
        )

    def stop(self) -> None:
        self._unload()

    # ----- refining -------------------------------------------------------------------------------------------

    def run_refine(self, job: Job) -> None:
        """A refinement (the local LLM on this worker's device, told the video model's memory plan)."""
        refine_job(job, self.loaded.plan.mode if self.loaded is not None else None)

    # ----- loading --------------------------------------------------------------------------------------------

    def _spec(self, load: LoadOptions) -> ModelSpec:
        key = (load.model, load.revision)
        if key not in self._specs:
            try:
                self._specs[key] = resolve_spec(load.model, load.revision)
            except ModelLoadError as exc:
                raise exc.for_model(load.model) from None
        return self._specs[key]

    def _unload(self) -> None:
        self.loaded, self._options = None, None
        self._state, self._message = "not loaded", ""
        release_memory()

    def _run_load(self, job: Job, load: LoadOptions) -> None:
        try:
            self._ensure_loaded(job, load)
        except ModelLoadError as exc:
            job.emit(ev.Failed(job.id, str(exc), "model"))
            return
        job.emit(ev.Ready(job.id, self._spec(load).id, self.loaded.plan.mode, self.loaded.plan.reason))

    def _ensure_loaded(self, job: Job, load: LoadOptions) -> None:
        if self.loaded is not None:
            return
        with _LOADING:
            self._load(job, load)

    def _load(self, job: Job, load: LoadOptions) -> None:
        self._options = load
        self._state, self._message = "loading", "starting"

        def report(stage: str, fraction: float, message: str) -> None:
            self._message = message
            job.emit(ev.Loading(job.id, stage, float(fraction), message))

        weights = load.weights
        spec = None
        try:
            spec = self._spec(load)
            report("resolve", 0.0, f"loading {spec.label}")
            model = open_model(spec, report)
            files = check_weights(weights, self.device, model, spec)
            plan, placement = self._plan_load(spec, model, job, files, load)
            report("memory", 0.5, f"memory mode {plan.mode}: {plan.reason}; {placement.describe()}")
            log.info("memory mode %s: %s; %s (%s)", plan.mode, plan.reason, placement.describe(), placement.reason)
            targets = {n: self.device for n, w in placement.where.items() if w == "gpu" and self.device.type == "cuda"}
            hashes = hash_files(files, cache_root() / "file-hashes.json", report)
            pipe = load_pipeline(spec, self.device, report, targets, model, weights, files)  # boundary: per job
            speed = apply_speed(pipe, load.speed, self.device)
            for notice in speed.notices:
                job.emit(ev.Notice(job.id, notice))
            self._before_memory(pipe)
            tag = f"{component_dtypes(self.device)['transformer']}-fp8={speed.fp8}"
            tag += f"-{weights.quantize}-{weights.quantize_text}-{sorted(hashes.items())}"
            dirs = {n: offload_folder(cache_root() / "offload", model.path, n, tag) for n in placement.on_disk()}
            text_on_cpu = weights.text_encoder_device == "cpu"
            apply_memory(pipe, plan, self.device, placement, dirs, frozenset({"text_encoder"} if text_on_cpu else ()))
            apply_compile(pipe, load.speed, speed)
        except ModelLoadError as exc:
            self._state, self._message = "failed", str(exc.for_model(load.model))
            raise
        except torch.OutOfMemoryError:
            self._state, self._message = "failed", "out of memory while loading"
            release_memory()
            raise ModelLoadError(
                "it does not fit in memory", "Try --memory group or sequential, or a smaller model", spec.id
            ) from None
        prepare_view(pipe)
        switch = ExpertSwitch(pipe, plan, self.device, placement)
        storage = record(pipe, weights, files, hashes, text_on_cpu)
        self.loaded = Loaded(
            pipe, plan, placement, speed, switch, self.device, {}, Adapters(pipe), storage, text_on_cpu
        )
        log.info("weights: %s", summary(storage))
        self._state, self._message = "ready", ""
        report("ready", 1.0, f"{spec.label} ready on {device_name(self.device)}")

    def _before_memory(self, pipe: Any) -> None:
        """A change to the freshly loaded pipeline before its memory hooks go on (a parallel rank splits it)."""

    def run_record(self) -> dict[str, Any]:
        """What this worker adds to a video's settings: which worker of a pool it is (a parallel rank adds how the
        work was split)."""
        return {} if self.identity is None else {"worker": dict(self.identity)}

    def _plan_load(
        self, spec: ModelSpec, model: ModelFolder, job: Job, files: dict[str, SingleFile], load: LoadOptions
    ) -> tuple[MemoryPlan, Placement]:
        """The memory mode (from VRAM) and each component's place (from host RAM), before any weight is read.

        Sizes are those the weights will be stored in (quantized, GGUF); a text encoder that runs on the CPU takes
        no VRAM. The table of measured peaks is for bf16 weights, so quantized weights plan from their sizes.
        """
        weights = load.weights
        fp8 = load.speed.fp8 and fp8_storage_supported(self.device) is None
        sizes, largest = model.planned_sizes(component_dtypes(self.device), weights, files)
        if fp8:  # float8 storage halves the bf16 experts' bytes
            sizes = {n: b // 2 if n.startswith("transformer") and n not in files else b for n, b in sizes.items()}
        quantized = bool(files) or "none" != weights.quantize or "none" != weights.quantize_text
        on_gpu = {n: b for n, b in sizes.items() if not (n == "text_encoder" and weights.text_encoder_device == "cpu")}
        vram = free_vram(self.device)
        plan = plan_memory(
            load.memory,
            self.device,
            on_gpu,
            vram,
            spec.moe,
            model=spec.id,
            size=planning_size(spec, replace(job.valid.request, frames=job.valid.pass_frames) if job.valid else None),
            peaks=None if quantized or len(on_gpu) < len(sizes) else load_peaks(),
            fp8=fp8,
        )
        placement = plan_placement(
            plan.mode,
            self.device.type,
            sizes,
            load.host_ram if load.host_ram is not None else host_ram_available(),
            spec.moe,
            vram_free=vram,
            largest_file=largest,
            disk_free=disk_free(cache_root()),
            model=spec.id,
        )
        if placement.mode != plan.mode:
            plan = MemoryPlan(placement.mode, f"{plan.reason}; then {placement.reason}")
        if len(on_gpu) < len(sizes) and placement.where.get("text_encoder") == "gpu":  # it runs on the CPU
            where = {**placement.where, "text_encoder": "ram"}
            why = {**placement.why, "text_encoder": "--text-encoder-device cpu: it runs on the CPU"}
            placement = replace(placement, where=where, why=why)
        return plan, placement

    # ----- generation -----------------------------------------------------------------------------------------

    def checkpoint(self, job: Job, stage: str) -> None:
        if self.fault_injector is not None:
            self.fault_injector(stage)
        if job.cancel_requested:
            raise Cancelled(stage)

    def _run_generate(self, job: Job, load: LoadOptions, options: RunOptions) -> Encoded | None:
        """Load if needed, denoise, decode into the partial MP4; the encoded video, or None when the job ended."""
        writer: VideoWriter | None = None
        outputs = Path(options.outputs)
        stage = "loading the model"
        try:
            self.checkpoint(job, "load")
            if self.on_start is not None:
                self.on_start(job)
            started = time.perf_counter()
            self._ensure_loaded(job, load)
            spec = self._spec(load)
            loaded = self.loaded
            cut = truncation_notices(loaded.pipe, job.valid.request)
            job.valid = replace(job.valid, notices=(*job.valid.notices, *cut))  # saved with the video too
            for notice in job.notices:
                job.emit(ev.Notice(job.id, notice))
            timings: dict[str, float] = {"load": time.perf_counter() - started}
            stage = "attaching LoRAs"
            lora_record = self._attach_loras(job, options)
            stage = "denoising"
            self.checkpoint(job, "denoise")
            if job.valid.windows:
                stage = "making the video window by window"
                settings: dict[str, Any] = {}

                def start_video(sampling: dict) -> VideoWriter | None:
                    settings.update(video_settings(loaded, job, spec, device_name(self.device), timings, sampling,
                                                   lora_record), **self.run_record())  # fmt: skip
                    if not self.decodes:
                        return None
                    return open_writer(job, settings, outputs, options.filenames, options.embed_prompt)

                writer, timings_windows, settings_color = make_windows(
                    loaded, job, started, options.preview_every, self.checkpoint, start_video
                )
                timings.update(timings_windows)
                settings["color_match"] = settings_color
                if writer is None:
                    return None
            else:
                latents, timings_denoise, sampling = denoise(
                    loaded, job, started, options.preview_every, self.checkpoint
                )
                timings.update(timings_denoise)
                if not self.decodes:
                    return None
                stage = "decoding"
                self.checkpoint(job, "decode")
                settings = video_settings(loaded, job, spec, device_name(self.device), timings, sampling, lora_record)
                settings.update(self.run_record())
                writer, timings["decode"] = decode(
                    loaded, job, latents, settings, outputs, self.checkpoint, options.filenames, options.embed_prompt
                )
            stage = "saving the video"
            self.checkpoint(job, "save")
            timings["total"] = time.perf_counter() - started
            settings["timings"] = timings
            encoded = Encoded(writer.close(), settings)
            writer = None
            return encoded
        except Cancelled as exc:
            job.emit(ev.Cancelled(job.id, f"Stopped during {exc.args[0]}; nothing was saved."))
        except ModelLoadError as exc:
            job.emit(ev.Failed(job.id, str(exc), "model"))
        except RequestError as exc:
            job.emit(ev.Failed(job.id, str(exc), "request"))
        except OutputError as exc:
            job.emit(ev.Failed(job.id, str(exc), "output"))
        except torch.OutOfMemoryError:
            job.emit(ev.Failed(job.id, self._oom_message(stage, load), "oom"))
        except OSError as exc:  # a full disk (ENOSPC, EDQUOT, EFBIG) is said as such
            if writer is not None:
                writer.abort()  # before the job ends: when it says nothing was saved, no partial file is left
            job.emit(ev.Failed(job.id, write_failure_message(outputs, exc), "output"))
        except Exception as exc:  # noqa: BLE001 - any other failure ends this job only
            log.error("job %s failed while %s: %s: %s", job.id, stage, exc.__class__.__name__, exc)
            log.debug("job %s traceback", job.id, exc_info=True)
            job.emit(ev.Failed(job.id, unexpected(stage)))
        finally:
            if writer is not None:
                writer.abort()
            if self.loaded is not None:
                self.loaded.pipe._interrupt = False
                self.loaded.pipe.maybe_free_model_hooks()
        return None

    def _attach_loras(self, job: Job, options: RunOptions) -> list[dict[str, Any]]:
        """Fetch the job's published LoRAs not yet in the folder, then attach exactly its LoRAs (adapters.py)."""
        picks = list(job.valid.loras)
        library = LoraLibrary(options.loras, Path(options.lora_presets) if options.lora_presets else None)
        for index, pick in enumerate(picks):
            if pick.entry.downloaded:
                continue

            def report(fraction: float, message: str) -> None:
                self._activity = f"{message} ({fraction:.0%})"
                job.emit(ev.Loading(job.id, "lora", fraction, message))

            try:
                fetch(pick.entry, library.folder, report)
            finally:
                self._activity = ""
            entry = library.entries().get(pick.entry.name)
            if entry is None or not entry.downloaded or entry.problem:
                raise RequestError("loras", f"The LoRA {pick.entry.name} was downloaded but its files are not usable.")
            picks[index] = replace(pick, entry=entry)
        job.valid = replace(job.valid, loras=tuple(picks))
        return self.loaded.adapters.use(
            job.valid.loras, lambda message: job.emit(ev.Loading(job.id, "lora", 0.0, message))
        )

    def _oom_message(self, stage: str, load: LoadOptions) -> str:
        mode = self.loaded.plan.mode if self.loaded else load.memory
        lower = {"none": "model or group", "model": "group", "group": "sequential"}.get(mode)
        hint = f"switch memory mode from {mode} to {lower}, or " if lower else ""
        return f"Out of GPU memory while {stage}. To fit, {hint}lower the size or the number of frames."


def ended_here(job: Job, on_start: Callable[[Job], None] | None, video_plan: str | None) -> bool:
    """The studio's side of a job for a worker whose model lives elsewhere (a parallel group, a pool on Ray):
    a refinement runs here (the refiner is an object of this process), and the studio's start checks run before a
    generation is sent. True when the job ended here."""
    if job.kind == "refine":
        refine_job(job, video_plan)
        return True
    if job.kind == "generate" and on_start is not None:
        try:
            on_start(job)
        except OutputError as exc:
            job.emit(ev.Failed(job.id, str(exc), "output"))
            return True
    return False


def refine_job(job: Job, video_plan: str | None) -> None:
    """Run a refine job (its refiner and arguments are the job's payload) to Refined, Failed or Cancelled."""
    from ..refine import RefineError

    refiner, arguments = job.payload
    job.started.set()
    try:
        result = refiner.refine(
            **arguments,
            video_plan=video_plan,
            should_stop=lambda: job.cancel_requested,
            status=lambda message: job.emit(ev.Notice(job.id, message)),
        )
    except (RefineError, RequestError, ValueError) as exc:
        job.emit(ev.Failed(job.id, str(exc), "request"))
        return
    except Exception as exc:  # noqa: BLE001 - on its own thread nothing else would end this job
        log.exception("refine job %s failed", job.id)
        job.emit(ev.Failed(job.id, f"Refinement failed: {exc.__class__.__name__}: {exc}"))
        return
    if job.cancel_requested:
        job.emit(ev.Cancelled(job.id, "Refinement stopped."))
    else:
        job.emit(ev.Refined(job.id, result))


def release_memory() -> None:
    """Free what a failed job, a cancel or an unload left behind (gc takes ~0.3 s: not after every job)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def leave_with(parent: int, last: Callable[[], None] | None = None) -> None:
    """End this child process (a parallel rank, the pool's Ray driver) when the studio's process is gone, even
    killed without a word: it may be waiting in a collective or holding a local Ray instance. `last` runs first."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        try:
            if last is not None:
                last()
        finally:
            os._exit(0)

    threading.Thread(target=watch, name="wan-studio-parent-watch", daemon=True).start()


def unexpected(stage: str) -> str:
    """A failure the studio did not foresee, in the user's words; the exception itself goes to the terminal's log."""
    return (
        f"Generation failed while {stage}: something went wrong inside the model pipeline, not in your settings. "
        "The terminal running the studio has the details. Try again; if it repeats, try another size or model."
    )
