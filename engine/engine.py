"""The Engine: the one public facade over the queue, the workers and the studio's own side of a job.

The page and the API talk to this class only. Behind it, admission (validation, can the model load, room on the
disk) happens here, jobs wait in the queue (admission/queue.py) and workers (run/worker.py) take them: a worker
loads the model and runs one job at a time. What crosses between queue and worker is plain data (the validated
request, LoadOptions, RunOptions, events, the encoded MP4), so a worker can live elsewhere; the outputs folder, the
content-credentials signing and the final all-or-nothing save stay here, on the studio's side (publish).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import events as ev
from .admission.queue import JobQueue
from .admission.request import GenerationRequest, ValidRequest, validate
from .admission.variations import Batch
from .catalog import ModelSpec, resolve_spec
from .errors import ModelLoadError, OutputError, RequestError, WorkersUnavailable
from .flags import FILE_NAMINGS
from .jobs import Job
from .library.credentials import CredentialError, CredentialOptions, Credentials, facts_from_settings
from .library.lora_hub import missing_download
from .library.loras import LoraLibrary, recommend
from .library.output import (
    EncodedVideo,
    check_free_space,
    check_outputs_dir,
    estimate_video_bytes,
    publish,
    remove_partials,
    write_failure_message,
)
from .models.memory import plan_memory
from .models.readiness import advice, cannot_load
from .models.storage import WeightOptions, refusal
from .refine import PromptRefiner
from .run.generation import APP_VERSION
from .run.parallel import ParallelWorker, group_devices, parallel_label, parallel_refusal
from .run.pool import RayPool, WorkerLost, pool_refusal
from .run.speed import SpeedOptions
from .run.worker import (
    Encoded,
    LoadOptions,
    LocalWorker,
    RunOptions,
    Worker,
    device_name,
    refine_job,
    release_memory,
    unexpected,
)

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
    parallel: str = ""  # how each video is split over processes ('Parallel: 4 GPUs (Ulysses)'); "" for one
    pool: str = ""  # a pool of workers on Ray: 'Workers: 3 of 4 busy (2 machines)'; "" without one
    pool_workers: tuple[str, ...] = ()  # one line per pool worker: where it runs and its state


class Engine:
    """UI-agnostic core. Build it, submit requests, read each job's events.

    Loading happens on a worker, lazily on the first job or through load_model(); nothing heavy happens here.
    `workers` > 1 runs that many local workers, each with its own copy of the model (jobs run side by side).
    `parallel` > 1 makes each worker a group of that many processes, one GPU each, that make every video together
    (run/parallel.py). `cluster` puts the workers on Ray instead (run/pool.py): "local" starts a local instance
    bound to 127.0.0.1, an address joins the team's cluster.
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
        workers: int = 1,
        parallel: int = 1,
        cluster: str | None = None,
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.memory_requested = memory
        plan_memory(memory, torch.device("cpu"), {}, None, False)  # refuses an unknown mode at once
        self.speed = speed or SpeedOptions()  # applied at the next load (see engine/run/speed.py)
        self.weights = weights or WeightOptions()  # quantization and transformer files, applied at load (storage.py)
        self.credentials = Credentials(credentials)  # the signer, set up once; its problem is said at launch
        self.outputs = Path(outputs)
        if filenames not in FILE_NAMINGS:
            raise ValueError(f"filenames must be one of {', '.join(FILE_NAMINGS)}, got {filenames!r}")
        self.filenames = filenames  # what a video's file name carries: a slug of the prompt, or time/seed/counter
        self.embed_prompt = embed_prompt  # False: the MP4's own copy of its settings holds no text (the JSON does)
        self.loras = LoraLibrary(loras, lora_presets)  # read on each use: files dropped in while it runs count
        self.host_ram = host_ram  # RAM the loader may plan for (bytes); None: what the OS reports available now
        self.min_free_bytes = int(min_free_bytes)  # kept free on the outputs disk beyond a video's estimated size
        self.removed_partials = remove_partials(self.outputs)  # what a studio killed mid-write left behind
        self.preview_every = max(0, int(preview_every))
        self._model_name = model
        self._revision = revision
        self._spec: ModelSpec | None = None
        count = max(1, int(workers))
        self._queue = JobQueue(count)
        self.parallel = max(1, int(parallel))
        # the workers: one in this process by default, or actors on Ray; each thread takes the next job
        self.pool = RayPool(None if cluster == "local" else cluster, count, self.parallel) if cluster else None
        self.workers: list[Worker] = self.pool.workers if self.pool else [self._worker(i) for i in range(count)]
        self._threads = [
            threading.Thread(target=self._serve, args=(w,), name=f"wan-studio-worker-{i + 1}", daemon=True)
            for i, w in enumerate(self.workers)
        ]
        for worker in self.workers:
            worker.on_start = self._room_for
        for thread in self._threads:
            thread.start()

    def _worker(self, index: int) -> Worker:
        """Worker `index`: this process on this device, or a parallel group on GPUs of its own."""
        if self.parallel == 1:
            return LocalWorker(self.device, f"local-{index + 1}")
        devices = group_devices(self.parallel, self.device, index * self.parallel)
        return ParallelWorker(self.parallel, devices, f"group-{index + 1}")

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
        """The first worker's loaded diffusers pipeline, or None (for tests and benchmarks; the UI never needs it)."""
        loaded = self._loaded
        return loaded.pipe if loaded else None

    @property
    def _loaded(self):
        """The first local worker's loaded model (tests and benchmarks look inside it)."""
        return getattr(self.workers[0], "loaded", None)

    @property
    def fault_injector(self) -> Callable[[str], None] | None:
        """Test seam: called at each stage of a job with the stage's name, on every local worker."""
        return getattr(self.workers[0], "fault_injector", None)

    @fault_injector.setter
    def fault_injector(self, inject: Callable[[str], None] | None) -> None:
        for worker in self.workers:
            if isinstance(worker, LocalWorker):
                worker.fault_injector = inject

    def state(self) -> ModelState:
        worker = self.workers[0].state()
        try:
            spec = self.spec
            label, tiny = spec.label, spec.tiny
            blocked = self._cannot_load(spec) if not worker.loaded and worker.state != "loading" else None
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
        state, message = (worker.state, worker.message) if blocked is None else ("failed", str(blocked))
        return ModelState(
            model=spec.id,
            label=label,
            state=state,
            message=message,
            memory=worker.memory or self.memory_requested,
            memory_reason=worker.memory_reason,
            device=self.device_name(),
            tiny=tiny,
            placement=worker.placement,
            advice=advice(spec, self.device) if not worker.loaded else "",
            activity=worker.activity,
            storage=worker.storage,
            parallel=parallel_label(self.parallel, self.device),
            pool=self.pool.summary() if self.pool else "",
            pool_workers=tuple(self.pool.details()) if self.pool else (),
        )

    def device_name(self) -> str:
        return device_name(self.device)

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
        self._queue.put(*jobs)  # all or nothing
        return Batch(jobs)

    def run_here(self, request: GenerationRequest) -> Job:
        """Validate, then run the generation on a new thread of this process, outside the workers' queue.

        For hosts where the GPU exists only inside one function call (Hugging Face ZeroGPU forks a process per
        call, and the worker thread is not in it); the caller serializes calls. Raises like submit().
        """
        (valid,) = self._admit([request], here=True)
        job = Job("generate", valid)
        job.emit(ev.Queued(job.id, 0))
        job.started.set()
        worker = self.workers[0]
        threading.Thread(target=self._run, args=(worker, job), name=f"wan-studio-here-{job.id}", daemon=True).start()
        return job

    def _admit(self, requests: list[GenerationRequest], here: bool = False) -> list[ValidRequest]:
        """Every request validated, the model loadable (not asked `here`: on ZeroGPU only the GPU call has CUDA),
        the outputs folder writable and its disk with room for all the videos. Raises before anything is queued."""
        valid = [self._validate(r) for r in requests]
        if self.pool is not None and self.pool.problem:
            raise WorkersUnavailable(f"{self.pool.problem}. The Gallery still works meanwhile.")
        if not here and not self.workers[0].state().loaded and (blocked := self._cannot_load(self.spec)) is not None:
            raise blocked
        check_outputs_dir(self.outputs)
        others = sum(estimate_video_bytes(v.request.width, v.request.height, v.total_frames) for v in valid[1:])
        reserve = self.min_free_bytes + others  # room for every video
        check_free_space(self.outputs, valid[0].request, reserve, valid[0].total_frames)
        return valid

    def _cannot_load(self, spec: ModelSpec) -> ModelLoadError | None:
        """Known before loading: the model needs what this machine lacks, or the weight options cannot work here."""
        if (why := refusal(self.weights, self.device)) is not None:
            return ModelLoadError(*why, spec.id)
        if self.pool is not None:
            local = self.pool.config.address is None
            if (why := pool_refusal(len(self.workers), self.parallel, self.device, local)) is not None:
                return why.for_model(spec.id)
        return parallel_refusal(spec, self.parallel, self.device) or cannot_load(spec)

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

        The local backend computes on the GPU, so its job queues on a worker behind video jobs and is told the
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
        plan = self.workers[0].state().memory or None
        threading.Thread(target=refine_job, args=(job, plan), name=f"wan-studio-refine-{job.id}", daemon=True).start()
        return job

    def queue_length(self) -> int:
        return len(self._queue)

    def shutdown(self, timeout: float | None = 10) -> None:
        self._queue.close()
        for thread in self._threads:
            thread.join(timeout)
        for worker in self.workers:
            worker.stop()  # a parallel group's processes end here
        if self.pool is not None:
            self.pool.stop()  # the Ray driver, and a local Ray instance with it

    # ----- the studio's side of a job --------------------------------------------------------------------------

    def _enqueue(self, job: Job) -> Job:
        self._queue.put(job)
        return job

    def _options(self) -> tuple[LoadOptions, RunOptions]:
        """What the workers load and how they run, as plain data (read when a job starts)."""
        load = LoadOptions(
            self._model_name, self._revision, self.memory_requested, self.speed, self.weights, self.host_ram
        )
        presets = str(self.loras.presets_path) if self.loras.presets_path else None
        run = RunOptions(
            str(self.outputs),
            self.preview_every,
            self.filenames,
            self.embed_prompt,
            str(self.loras.folder),
            presets,
        )
        return load, run

    def _room_for(self, job: Job) -> None:
        """Checked again when a job starts: the queue may have waited while the disk filled (raises OutputError)."""
        check_free_space(self.outputs, job.valid.request, self.min_free_bytes, job.valid.total_frames)

    def _switch(self, job: Job) -> None:
        """A load job changes what every worker should hold (each reloads before its next job)."""
        model, memory, speed, weights = job.target
        if memory is not None:
            plan_memory(memory, torch.device("cpu"), {}, None, False)
            self.memory_requested = memory
        if speed is not None:
            self.speed = speed
        if weights is not None:
            self.weights = weights
        if model is not None and model != self._model_name:
            self._model_name, self._spec, self._revision = model, None, None
            if weights is None:  # a transformer file is one model's: another model loads its own
                self.weights = replace(self.weights, transformer=None, transformer_2=None)

    def _serve(self, worker: Worker) -> None:
        """One worker's loop: the next job from the queue, run, then published or ended."""
        while (job := self._queue.take(worker.name, worker.state().loaded)) is not None:
            job.started.set()
            try:
                if job.kind == "load":
                    self._switch(job)
                self._run(worker, job)
            except WorkerLost as exc:
                self._lost(worker, job, str(exc))
            except BaseException as exc:  # noqa: BLE001 - the worker must survive anything a job does
                log.error("job %s crashed: %s: %s", job.id, exc.__class__.__name__, exc)
                log.debug("job %s traceback", job.id, exc_info=True)
                job.emit(ev.Failed(job.id, unexpected("running the job"), "error"))
            finally:
                self._queue.done(job)
                if not job.finished or not isinstance(job.wait(0), (ev.Done, ev.Ready, ev.Refined)):
                    release_memory()  # a failed or stopped job may leave tensors in reference cycles

    def _lost(self, worker: Worker, job: Job, why: str) -> None:
        """A pool worker stopped under its job (Ray restarts the worker): the job runs again once, on another
        worker when there is one; a second loss ends it. Nothing of it was saved either time."""
        if job.reruns == 0 and not job.cancel_requested and job.kind != "load":
            job.reruns, job.avoid = 1, worker.name
            log.warning("job %s: %s; it runs again", job.id, why)
            job.emit(ev.Notice(job.id, f"The {why[0].lower()}{why[1:]}; the video runs again from the start."))
            self._queue.put_again(job)
            return
        log.error("job %s: %s", job.id, why)
        again = " again" if job.reruns else ""
        job.emit(ev.Failed(job.id, f"The video could not be made: {why}{again}. Nothing was saved.", "error"))

    def _run(self, worker: Worker, job: Job) -> None:
        """The job on the worker; a generation's encoded video is then signed and published here."""
        load, options = self._options()
        encoded = worker.run(job, load, options)
        if encoded is not None:
            self._publish(job, encoded)

    def _publish(self, job: Job, encoded: Encoded) -> None:
        """Sign the worker's MP4 and give it its final name in the outputs folder, then say Done."""
        settings = encoded.settings
        timings = settings.setdefault("timings", {})
        started = time.perf_counter()
        try:
            path = publish(encoded.video, settings, signing(self.credentials, job, settings, encoded.video))
        except OutputError as exc:
            job.emit(ev.Failed(job.id, str(exc), "output"))
            return
        except OSError as exc:  # a full disk (ENOSPC, EDQUOT, EFBIG) is said as such
            job.emit(ev.Failed(job.id, write_failure_message(self.outputs, exc), "output"))
            return
        except Exception as exc:  # noqa: BLE001 - any other failure ends this job only
            log.error("job %s failed while saving the video: %s: %s", job.id, exc.__class__.__name__, exc)
            job.emit(ev.Failed(job.id, unexpected("saving the video")))
            return
        timings["save"] = time.perf_counter() - started
        job.emit(ev.Done(job.id, str(path), settings, job.seed, dict(timings)))


def signing(credentials: Credentials, job: Job, settings: dict[str, Any], video: EncodedVideo) -> Callable[..., dict]:
    """The sign step of publishing (output.publish), on the studio's side: content credentials for this video, or
    the record of why it is saved unsigned, said to the job as a notice."""

    def sign(source: Path, target: Path) -> dict[str, Any]:
        record = credentials.unsigned()
        if credentials.active:
            image = job.valid.image
            pixels = None if image is None else hashlib.sha256(image.tobytes()).hexdigest()
            facts = facts_from_settings(settings, f"{video.stem}.mp4", pixels, f"{video.plain_stem}.mp4")
            source_video = job.valid.source
            parent = None if source_video is None else (source_video.name, source_video.data)
            try:
                record = credentials.sign(source, target, facts, image, parent, job.valid.last_image)
            except CredentialError as exc:
                record = {"signed": False, "reason": str(exc)}
                log.warning("job %s: saved without content credentials: %s", job.id, exc)
        if not record["signed"]:
            job.emit(ev.Notice(job.id, f"Saved without content credentials: {record['reason']}."))
        return record

    return sign


def request_from_settings(settings: dict[str, Any]) -> GenerationRequest:
    """A request that regenerates a saved video (add the image again for image-to-video).

    A take of a batch comes back as a single request: made again, it is not one of that batch's takes."""
    request = dict(settings["request"])
    request["extra"] = {k: v for k, v in (request.get("extra") or {}).items() if k != "batch"}
    return GenerationRequest(**request)
