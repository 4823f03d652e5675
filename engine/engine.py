"""The Engine: one worker thread runs jobs in submission order; each job streams typed events back.

A generation runs in fixed stages: load (if needed), prepare, denoise, streaming decode into the MP4, finish. The
stages after loading live in generation.py; this module is the queue, loading and the public facade.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import events as ev
from .adapters import Adapters
from .catalog import ModelSpec, resolve_spec
from .credentials import CredentialOptions, Credentials
from .errors import ModelLoadError, OutputError, RequestError, StudioError
from .flags import FILE_NAMINGS
from .generation import APP_VERSION, Cancelled, Loaded, decode, denoise, signing, video_settings
from .jobs import Job, turn_order
from .loading import ModelFolder, check_weights, component_dtypes, load_pipeline, open_model
from .lora_hub import fetch, missing_download
from .loras import LoraLibrary, recommend
from .memory import (
    ExpertSwitch,
    MemoryPlan,
    apply_memory,
    free_vram,
    load_peaks,
    offload_folder,
    plan_memory,
    planning_size,
)
from .output import (
    VideoWriter,
    check_free_space,
    check_outputs_dir,
    estimate_video_bytes,
    remove_partials,
    write_failure_message,
)
from .pipeline_call import truncation_notices
from .placement import Placement, disk_free, host_ram_available, plan_placement
from .readiness import advice, cannot_load
from .refine import PromptRefiner, RefineError
from .request import GenerationRequest, ValidRequest, validate
from .single_file import SingleFile, hash_files
from .speed import SpeedOptions, apply_compile, apply_speed, fp8_storage_supported
from .storage import WeightOptions, record, refusal, summary
from .tiny import cache_root
from .variations import Batch
from .views import prepare as prepare_view

__all__ = ["APP_VERSION", "Engine", "ModelState", "request_from_settings"]
log = logging.getLogger("wan_studio.engine")


@dataclass(frozen=True)
class ModelState:
    model: str
    label: str
    state: str  # "not loaded", "loading", "ready", "failed"
    message: str  # progress or failure reason
    memory: str  # chosen memory mode (after loading) or the requested one
    memory_reason: str
    device: str
    tiny: bool
    placement: str = ""  # where each component lives (GPU, RAM, disk) and the RAM figures behind it
    advice: str = ""  # worth knowing before the first job: no CUDA GPU for a real model, a download to come
    activity: str = ""  # work besides loading the model, with its progress (a LoRA download)
    storage: str = ""  # each component's storage type and size, and the file it came from (storage.summary)


class Engine:
    """UI-agnostic core. Build it, submit requests, read each job's events.

    Loading happens on the worker, lazily on the first job or through load_model(); nothing heavy happens here.
    """

    def __init__(
        self,
        model: str = "tiny-ti2v",
        memory: str = "auto",
        outputs: str | Path = "outputs",
        device: str | None = None,
        preview_every: int = 1,
        revision: str | None = None,
        speed: SpeedOptions | None = None,
        min_free_bytes: int = 64 * 2**20,
        host_ram: int | None = None,
        loras: str | Path = "loras",
        lora_presets: Path | None = None,
        weights: WeightOptions | None = None,
        credentials: CredentialOptions | None = None,
        filenames: str = "prompt",
        embed_prompt: bool = True,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.memory_requested = memory
        plan_memory(memory, torch.device("cpu"), {}, None, False)  # refuses an unknown mode at once
        self.speed = speed or SpeedOptions()  # applied at the next load (see engine/speed.py)
        self.weights = weights or WeightOptions()  # quantization and transformer files, applied at load (storage.py)
        self.credentials = Credentials(credentials)  # the signer, set up once; its problem is said at launch
        self.outputs = Path(outputs)
        if filenames not in FILE_NAMINGS:
            raise ValueError(f"filenames must be one of {', '.join(FILE_NAMINGS)}, got {filenames!r}")
        self.filenames = filenames  # what a video's file name carries: a slug of the prompt, or time/seed/counter
        self.embed_prompt = embed_prompt  # False: the MP4's own copy of its settings holds no text (the JSON does)
        self.loras = LoraLibrary(loras, lora_presets)  # read on each use: files dropped in while it runs count
        self._activity = ""  # what the worker does besides loading (a LoRA download), for the header
        self.host_ram = host_ram  # RAM the loader may plan for (bytes); None: what the OS reports available now
        self.min_free_bytes = int(min_free_bytes)  # kept free on the outputs disk beyond a video's estimated size
        self.removed_partials = remove_partials(self.outputs)  # what a studio killed mid-write left behind
        self.preview_every = max(0, int(preview_every))
        self.fault_injector: Callable[[str], None] | None = None  # test seam: called at each stage with its name
        self._model_name = model
        self._revision = revision
        self._spec: ModelSpec | None = None
        self._spec_error: ModelLoadError | None = None
        self._loaded: Loaded | None = None  # the pipeline and what its load decided (generation.py)
        self._state = "not loaded"
        self._state_message = ""
        self._lock = threading.Condition(threading.RLock())
        self._served: dict[str, int] = {}  # owner -> the turn it was last served (fair queue, _take_turn)
        self._turns = 0
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="wan-studio-worker", daemon=True)
        self._worker.start()

    # ----- public API -----------------------------------------------------------------------------------------

    @property
    def spec(self) -> ModelSpec:
        """The current model's spec (read from the catalog or its model_index.json). Raises ModelLoadError."""
        if self._spec is None:
            try:
                self._spec = resolve_spec(self._model_name, self._revision)
            except ModelLoadError as exc:
                raise exc.for_model(self._model_name) from None
        return self._spec

    @property
    def pipeline(self):
        """The loaded diffusers pipeline, or None (for tests and benchmarks; the UI never needs it)."""
        return self._loaded.pipe if self._loaded else None

    def state(self) -> ModelState:
        try:
            spec = self.spec
            label, tiny = spec.label, spec.tiny
            blocked = self._cannot_load(spec) if self._loaded is None and self._state != "loading" else None
        except ModelLoadError as exc:
            return ModelState(
                self._model_name,
                self._model_name,
                "failed",
                str(exc),
                self.memory_requested,
                "",
                self.device_name(),
                False,
            )
        loaded = self._loaded
        plan = loaded.plan if loaded else None
        state, message = (self._state, self._state_message) if blocked is None else ("failed", str(blocked))
        return ModelState(
            model=spec.id,
            label=label,
            state=state,
            message=message,
            memory=plan.mode if plan else self.memory_requested,
            memory_reason=plan.reason if plan else "",
            device=self.device_name(),
            tiny=tiny,
            placement=loaded.placement.summary() if loaded and loaded.placement else "",
            advice=advice(spec, self.device) if loaded is None else "",
            activity=self._activity,
            storage=summary(loaded.storage) if loaded else "",
        )

    def device_name(self) -> str:
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            return f"{torch.cuda.get_device_name(self.device)} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
        return "CPU"

    def submit(self, request: GenerationRequest) -> Job:
        """Validate now (raises RequestError, ModelLoadError or OutputError) and queue the job."""
        (valid,) = self._admit([request])
        return self._enqueue(Job("generate", valid))

    def submit_batch(self, requests: list[GenerationRequest], owner: str | None = None) -> Batch:
        """Validate every take first (one bad take refuses the whole batch, nothing is queued), then queue them.

        The queue takes turns between owners (one client's batch does not hold back other clients' jobs): takes of
        one owner run in order, interleaved with everyone else's. Raises like submit().
        """
        jobs = [Job("generate", v) for v in self._admit(requests)]
        for job in jobs:
            job.owner = owner or f"batch-{(job.valid.request.extra.get('batch') or {}).get('id', job.id)}"
        with self._lock:  # all or nothing: a shutdown between two takes must not leave half a batch queued
            if self._closed:
                raise StudioError("The engine has shut down.")
            for job in jobs:
                self._enqueue(job)
        return Batch(jobs)

    def run_here(self, request: GenerationRequest) -> Job:
        """Validate, then run the generation on a new thread of this process, outside the worker's queue.

        For hosts where the GPU exists only inside one function call (Hugging Face ZeroGPU forks a process per
        call, and the worker thread is not in it); the caller serializes calls. Raises like submit().
        """
        (valid,) = self._admit([request], here=True)
        job = Job("generate", valid)
        job.emit(ev.Queued(job.id, 0))
        job.started.set()
        threading.Thread(target=self._run_generate, args=(job,), name=f"wan-studio-here-{job.id}", daemon=True).start()
        return job

    def _admit(self, requests: list[GenerationRequest], here: bool = False) -> list[ValidRequest]:
        """Every request validated, the model loadable (not asked `here`: on ZeroGPU only the GPU call has CUDA),
        the outputs folder writable and its disk with room for all the videos. Raises before anything is queued."""
        valid = [self._validate(r) for r in requests]
        if not here and self._loaded is None and (blocked := self._cannot_load(self.spec)) is not None:
            raise blocked
        check_outputs_dir(self.outputs)
        others = sum(estimate_video_bytes(v.request.width, v.request.height, v.request.frames) for v in valid[1:])
        check_free_space(self.outputs, valid[0].request, self.min_free_bytes + others)  # room for every video
        return valid

    def _cannot_load(self, spec: ModelSpec) -> ModelLoadError | None:
        """Known before loading: the model needs what this machine lacks, or the weight options cannot work here."""
        if (why := refusal(self.weights, self.device)) is not None:
            return ModelLoadError(*why, spec.id)
        return cannot_load(spec)

    def _validate(self, request: GenerationRequest) -> ValidRequest:
        """The LoRA choice first (its recommended settings fill what the user left unset), then the request."""
        spec = self.spec
        picks = self.loras.pick(request.loras, spec)
        for pick in picks:
            if (why := missing_download(pick.entry)) is not None:
                raise RequestError("loras", why)
        request, applied, said = recommend(request, picks, spec.moe)
        request = replace(request, loras=", ".join(p.text() for p in picks) or None)
        valid = validate(request, spec)
        return replace(valid, notices=(*said, *valid.notices), loras=picks, recommended=applied)

    def list_loras(self) -> list[dict[str, Any]]:
        """The LoRA library for /list_loras and the page: name, kind, models, recommended settings, triggers."""
        try:
            spec = self.spec
        except ModelLoadError:
            spec = None
        return [{**e.listing(), "fits": spec is not None and e.fits(spec)} for e in self.loras.entries().values()]

    def fast_lora(self) -> str | None:
        """The few-step LoRA for the current model (in the folder, or published and fetched on first use)."""
        return self.loras.fast_lora(self.spec)

    def load_model(
        self,
        model: str | None = None,
        memory: str | None = None,
        speed: SpeedOptions | None = None,
        weights: WeightOptions | None = None,
    ) -> Job:
        """Queue a (re)load: switching frees the old model before the new one loads. Ends with Ready or Failed.

        New speed options, weight options or a new memory mode reload the current model: all are applied at load.
        Transformer files belong to the model they were given for: switching to another model drops them.
        """
        job = Job("load")
        job.target = (model, memory, speed, weights)
        return self._enqueue(job)

    def refine(
        self,
        refiner: PromptRefiner,
        prompt: str,
        image: Any = None,
        language: str = "en",
        mode: str = "t2v",
        backend: str | None = None,
        style: str | None = None,
        variant: int = 0,
    ) -> Job:
        """Refine a prompt as a job that ends with Refined(result) (Failed when there is nothing to refine).

        `variant` > 0 asks for another version of the same idea (the variations' wordings).

        The local backend computes on the GPU, so its job queues on the worker behind video jobs and is told the
        video model's memory plan (the LLM leaves the GPU afterwards unless both fit). Rules and openai need no GPU:
        they start at once on their own thread, even while a video renders.
        """
        job = Job("refine")
        arguments = dict(prompt=prompt, image=image, language=language, mode=mode, backend=backend, style=style)
        if variant:
            arguments["variant"] = int(variant)
        job.payload = (refiner, arguments)
        if refiner.uses_device(backend):
            return self._enqueue(job)
        job.emit(ev.Queued(job.id, 0))
        threading.Thread(target=self._run_refine, args=(job,), name=f"wan-studio-refine-{job.id}", daemon=True).start()
        return job

    def queue_length(self) -> int:
        with self._lock:
            return len(self._pending) + (1 if self._running else 0)

    def shutdown(self, timeout: float | None = 10) -> None:
        with self._lock:
            self._closed = True
            for job in self._pending:
                job.emit(ev.Cancelled(job.id, "The studio is shutting down."))
            self._pending.clear()
            if self._running:
                self._running.cancel()
            self._lock.notify_all()
        self._worker.join(timeout)

    # ----- queue ----------------------------------------------------------------------------------------------

    def _enqueue(self, job: Job) -> Job:
        with self._lock:  # re-entrant: submit_batch holds it across a batch
            if self._closed:
                raise StudioError("The engine has shut down.")
            self._pending.append(job)
            self._report_positions(new=job)  # a new owner's job may start before batch takes already waiting
            self._lock.notify_all()
        return job

    def _report_positions(self, new: Job | None = None) -> None:
        """Tell each waiting job how many jobs start before it (the running one included), when that changed."""
        running = 1 if self._running else 0
        for index, waiting in enumerate(turn_order(self._pending, self._served)):
            ahead = index + running
            if waiting is new or waiting.position != ahead:
                waiting.position = ahead
                waiting.emit(ev.Queued(waiting.id, ahead))

    def _next_job(self) -> Job | None:
        with self._lock:
            while True:
                # a queued job that was cancelled is removed, not run
                for job in [j for j in self._pending if j.cancel_requested]:
                    self._pending.remove(job)
                    job.emit(ev.Cancelled(job.id, "Cancelled before it started."))
                if self._pending or self._closed:
                    break
                self._lock.wait(timeout=0.5)
            if self._closed:
                return None
            job = self._take_turn()
            self._running = job
            self._report_positions()
            return job

    def _take_turn(self) -> Job:
        """The next job by turn_order: owners take turns, each owner's jobs in their order."""
        job = turn_order(self._pending, self._served)[0]
        self._pending.remove(job)
        self._turns += 1
        self._served[job.owner] = self._turns
        if len(self._served) > 1000:  # forget owners with nothing waiting
            waiting = {j.owner for j in self._pending}
            self._served = {o: t for o, t in self._served.items() if o in waiting}
        return job

    def _work(self) -> None:
        while (job := self._next_job()) is not None:
            job.started.set()
            try:
                if job.kind == "load":
                    self._run_load(job)
                elif job.kind == "refine":
                    self._run_refine(job)
                else:
                    self._run_generate(job)
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything a job does
                log.error("job %s crashed: %s: %s", job.id, exc.__class__.__name__, exc)
                log.debug("job %s traceback", job.id, exc_info=True)
                job.emit(ev.Failed(job.id, _unexpected("running the job"), "error"))
            finally:
                with self._lock:
                    self._running = None
                if not job.finished or not isinstance(job.wait(0), (ev.Done, ev.Ready, ev.Refined)):
                    self._release_memory()  # a failed or stopped job may leave tensors in reference cycles

    # ----- refining -------------------------------------------------------------------------------------------

    def _run_refine(self, job: Job) -> None:
        refiner, arguments = job.payload
        job.started.set()
        plan = self._loaded.plan.mode if self._loaded is not None else None
        try:
            result = refiner.refine(
                **arguments,
                video_plan=plan,
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

    # ----- loading --------------------------------------------------------------------------------------------

    def _unload(self) -> None:
        self._loaded = None
        self._state, self._state_message = "not loaded", ""
        self._release_memory()

    def _run_load(self, job: Job) -> None:
        model, memory, speed, weights = job.target
        if memory is not None:
            plan_memory(memory, torch.device("cpu"), {}, None, False)
            self.memory_requested = memory
        new_speed = speed is not None and speed != self.speed
        if new_speed:
            self.speed = speed
        new_weights = weights is not None and weights != self.weights
        if new_weights:
            self.weights = weights
        if model is not None and model != self._model_name:
            self._unload()
            self._model_name, self._spec, self._revision = model, None, None
            if weights is None:  # a transformer file is one model's: another model loads its own
                self.weights = replace(self.weights, transformer=None, transformer_2=None)
        elif (memory is not None or new_speed or new_weights) and self._loaded is not None:
            self._unload()
        try:
            self._ensure_loaded(job)
        except ModelLoadError as exc:
            job.emit(ev.Failed(job.id, str(exc), "model"))
            return
        job.emit(ev.Ready(job.id, self.spec.id, self._loaded.plan.mode, self._loaded.plan.reason))

    def _ensure_loaded(self, job: Job) -> None:
        if self._loaded is not None:
            return
        self._state, self._state_message = "loading", "starting"

        def report(stage: str, fraction: float, message: str) -> None:
            self._state_message = message
            job.emit(ev.Loading(job.id, stage, float(fraction), message))

        try:
            spec = self.spec
            report("resolve", 0.0, f"loading {spec.label}")
            model = open_model(spec, report)
            files = check_weights(self.weights, self.device, model, spec)
            plan, placement = self._plan_load(spec, model, job, files)
            report("memory", 0.5, f"memory mode {plan.mode}: {plan.reason}; {placement.describe()}")
            log.info("memory mode %s: %s; %s (%s)", plan.mode, plan.reason, placement.describe(), placement.reason)
            targets = {n: self.device for n, w in placement.where.items() if w == "gpu" and self.device.type == "cuda"}
            hashes = hash_files(files, cache_root() / "file-hashes.json", report)
            pipe = load_pipeline(spec, self.device, report, targets, model, self.weights, files)  # boundary: per job
            speed = apply_speed(pipe, self.speed, self.device)
            for notice in speed.notices:
                job.emit(ev.Notice(job.id, notice))
            tag = f"{component_dtypes(self.device)['transformer']}-fp8={speed.fp8}"
            tag += f"-{self.weights.quantize}-{self.weights.quantize_text}-{sorted(hashes.items())}"
            dirs = {n: offload_folder(cache_root() / "offload", model.path, n, tag) for n in placement.on_disk()}
            text_on_cpu = self.weights.text_encoder_device == "cpu"
            apply_memory(pipe, plan, self.device, placement, dirs, frozenset({"text_encoder"} if text_on_cpu else ()))
            apply_compile(pipe, self.speed, speed)
        except ModelLoadError as exc:
            self._state, self._state_message = "failed", str(exc.for_model(self._model_name))
            raise
        except torch.OutOfMemoryError:
            self._state, self._state_message = "failed", "out of memory while loading"
            self._release_memory()
            raise ModelLoadError(
                "it does not fit in memory", "Try --memory group or sequential, or a smaller model", spec.id
            ) from None
        prepare_view(pipe)
        switch = ExpertSwitch(pipe, plan, self.device, placement)
        storage = record(pipe, self.weights, files, hashes, text_on_cpu)
        self._loaded = Loaded(
            pipe, plan, placement, speed, switch, self.device, {}, Adapters(pipe), storage, text_on_cpu
        )
        log.info("weights: %s", summary(storage))
        self._state, self._state_message = "ready", ""
        report("ready", 1.0, f"{spec.label} ready on {self.device_name()}")

    def _plan_load(
        self, spec: ModelSpec, model: ModelFolder, job: Job, files: dict[str, SingleFile]
    ) -> tuple[MemoryPlan, Placement]:
        """The memory mode (from VRAM) and each component's place (from host RAM), before any weight is read.

        Sizes are those the weights will be stored in (quantized, GGUF); a text encoder that runs on the CPU takes
        no VRAM. The table of measured peaks is for bf16 weights, so quantized weights plan from their sizes.
        """
        fp8 = self.speed.fp8 and fp8_storage_supported(self.device) is None
        sizes, largest = model.planned_sizes(component_dtypes(self.device), self.weights, files)
        if fp8:  # float8 storage halves the bf16 experts' bytes
            sizes = {n: b // 2 if n.startswith("transformer") and n not in files else b for n, b in sizes.items()}
        quantized = bool(files) or "none" != self.weights.quantize or "none" != self.weights.quantize_text
        on_gpu = {
            n: b for n, b in sizes.items() if not (n == "text_encoder" and self.weights.text_encoder_device == "cpu")
        }
        vram = free_vram(self.device)
        plan = plan_memory(
            self.memory_requested,
            self.device,
            on_gpu,
            vram,
            spec.moe,
            model=spec.id,
            size=planning_size(spec, job.valid.request if job.valid is not None else None),
            peaks=None if quantized or len(on_gpu) < len(sizes) else load_peaks(),
            fp8=fp8,
        )
        placement = plan_placement(
            plan.mode,
            self.device.type,
            sizes,
            self.host_ram if self.host_ram is not None else host_ram_available(),
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

    def _checkpoint(self, job: Job, stage: str) -> None:
        if self.fault_injector is not None:
            self.fault_injector(stage)
        if job.cancel_requested:
            raise Cancelled(stage)

    def _run_generate(self, job: Job) -> None:
        writer: VideoWriter | None = None
        stage = "loading the model"
        try:
            self._checkpoint(job, "load")
            check_free_space(self.outputs, job.valid.request, self.min_free_bytes)  # again: the queue may have waited
            started = time.perf_counter()
            self._ensure_loaded(job)
            spec = self.spec
            loaded = self._loaded
            cut = truncation_notices(loaded.pipe, job.valid.request)
            job.valid = replace(job.valid, notices=(*job.valid.notices, *cut))  # saved with the video too
            for notice in job.notices:
                job.emit(ev.Notice(job.id, notice))
            timings: dict[str, float] = {"load": time.perf_counter() - started}
            stage = "attaching LoRAs"
            lora_record = self._attach_loras(job)
            stage = "denoising"
            self._checkpoint(job, "denoise")
            latents, timings_denoise, sampling = denoise(loaded, job, started, self.preview_every, self._checkpoint)
            timings.update(timings_denoise)
            stage = "decoding"
            self._checkpoint(job, "decode")
            settings = video_settings(loaded, job, spec, self.device_name(), timings, sampling, lora_record)
            writer, timings["decode"] = decode(
                loaded, job, latents, settings, self.outputs, self._checkpoint, self.filenames, self.embed_prompt
            )
            stage = "saving the video"
            self._checkpoint(job, "save")
            t_save = time.perf_counter()
            timings["total"] = time.perf_counter() - started
            settings["timings"] = timings
            path = writer.finish(settings, signing(self.credentials, job, settings, writer))
            writer = None
            timings["save"] = time.perf_counter() - t_save
            job.emit(ev.Done(job.id, str(path), settings, job.seed, dict(timings)))
        except Cancelled as exc:
            job.emit(ev.Cancelled(job.id, f"Stopped during {exc.args[0]}; nothing was saved."))
        except ModelLoadError as exc:
            job.emit(ev.Failed(job.id, str(exc), "model"))
        except RequestError as exc:
            job.emit(ev.Failed(job.id, str(exc), "request"))
        except OutputError as exc:
            job.emit(ev.Failed(job.id, str(exc), "output"))
        except torch.OutOfMemoryError:
            job.emit(ev.Failed(job.id, self._oom_message(stage), "oom"))
        except OSError as exc:  # a full disk (ENOSPC, EDQUOT, EFBIG) is said as such
            if writer is not None:
                writer.abort()  # before the job ends: when it says nothing was saved, no partial file is left
            job.emit(ev.Failed(job.id, write_failure_message(self.outputs, exc), "output"))
        except Exception as exc:  # noqa: BLE001 - any other failure ends this job only
            log.error("job %s failed while %s: %s: %s", job.id, stage, exc.__class__.__name__, exc)
            log.debug("job %s traceback", job.id, exc_info=True)
            job.emit(ev.Failed(job.id, _unexpected(stage)))
        finally:
            if writer is not None:
                writer.abort()
            if self._loaded is not None:
                self._loaded.pipe._interrupt = False
                self._loaded.pipe.maybe_free_model_hooks()

    def _attach_loras(self, job: Job) -> list[dict[str, Any]]:
        """Fetch the job's published LoRAs not yet in the folder, then attach exactly its LoRAs (adapters.py)."""
        picks = list(job.valid.loras)
        for index, pick in enumerate(picks):
            if pick.entry.downloaded:
                continue

            def report(fraction: float, message: str) -> None:
                self._activity = f"{message} ({fraction:.0%})"
                job.emit(ev.Loading(job.id, "lora", fraction, message))

            try:
                fetch(pick.entry, self.loras.folder, report)
            finally:
                self._activity = ""
            entry = self.loras.entries().get(pick.entry.name)
            if entry is None or not entry.downloaded or entry.problem:
                raise RequestError("loras", f"The LoRA {pick.entry.name} was downloaded but its files are not usable.")
            picks[index] = replace(pick, entry=entry)
        job.valid = replace(job.valid, loras=tuple(picks))
        return self._loaded.adapters.use(
            job.valid.loras, lambda message: job.emit(ev.Loading(job.id, "lora", 0.0, message))
        )

    def _oom_message(self, stage: str) -> str:
        mode = self._loaded.plan.mode if self._loaded else self.memory_requested
        lower = {"none": "model or group", "model": "group", "group": "sequential"}.get(mode)
        hint = f"switch memory mode from {mode} to {lower}, or " if lower else ""
        return f"Out of GPU memory while {stage}. To fit, {hint}lower the size or the number of frames."

    def _release_memory(self) -> None:
        """Free what a failed job, a cancel or an unload left behind (gc takes ~0.3 s: not after every job)."""
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _unexpected(stage: str) -> str:
    """A failure the studio did not foresee, in the user's words; the exception itself goes to the terminal's log."""
    return (
        f"Generation failed while {stage}: something went wrong inside the model pipeline, not in your settings. "
        "The terminal running the studio has the details. Try again; if it repeats, try another size or model."
    )


def request_from_settings(settings: dict[str, Any]) -> GenerationRequest:
    """A request that regenerates a saved video (add the image again for image-to-video).

    A take of a batch comes back as a single request: made again, it is not one of that batch's takes."""
    request = dict(settings["request"])
    request["extra"] = {k: v for k, v in (request.get("extra") or {}).items() if k != "batch"}
    return GenerationRequest(**request)
