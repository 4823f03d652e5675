"""One process of a parallel group: a LocalWorker whose transformers are split over the group (Ulysses).

Started by run/parallel.py; it talks to the studio over its own pipe only: it waits there while idle (no
collective is pending between jobs, so no watchdog can fire however long the studio is idle), runs each job it is
sent, and says when the job ended. Rank 0 also forwards the job's events and hands back the encoded MP4; the
other ranks stop after denoising (the VAE runs once, on rank 0). Every rank uses the job's seed, so the latents are
those one process would make; only attention is split, by diffusers' context parallelism.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.distributed as dist

from .. import events as ev
from ..errors import ModelLoadError
from ..jobs import Job
from .generation import Cancelled
from .worker import LocalWorker, leave_with

log = logging.getLogger("wan_studio.engine")
KIND = "ulysses"


@dataclass(frozen=True)
class GroupConfig:
    """How the studio started this group (plain data: it crosses into the spawned process)."""

    degree: int
    port: int  # the rendezvous on 127.0.0.1
    devices: tuple[str, ...]  # one per rank: "cuda:2" or "cpu"
    timeout_s: float  # the longest a collective may wait for the other ranks
    threads: int  # torch CPU threads per rank (the CPU path shares the machine's cores)

    @property
    def backend(self) -> str:
        return "nccl" if self.devices[0].startswith("cuda") else "gloo"


def rank_main(rank: int, config: GroupConfig, conn: Connection, stop: Any, parent: int) -> None:
    """The process entry point: join the group, then serve the studio's messages until told to stop."""
    leave_with(parent)
    _quiet(rank)
    torch.set_num_threads(config.threads)
    device = torch.device(config.devices[rank])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # CPU tensors (the stop flag, ulysses_anything's sizes) go over gloo; CUDA tensors over NCCL
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{config.port}",
        rank=rank,
        world_size=config.degree,
        timeout=datetime.timedelta(seconds=config.timeout_s),
    )
    worker = RankWorker(device, rank, config)
    conn.send(("up",))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the studio is gone
                break
            if message[0] == "stop":
                break
            _, job_id, kind, valid, load, options = message
            job = RankJob(job_id, kind, valid, stop, conn if rank == 0 else None)
            encoded = worker.run(job, load, options)
            conn.send(("end", job.ending(), encoded, worker.state() if rank == 0 else None))
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


class RankJob(Job):
    """The studio's job as this rank sees it: the same id and request, the group's stop switch (a shared event the
    studio sets); rank 0 forwards every event to the studio."""

    def __init__(self, job_id: int, kind: str, valid: Any, stop: Any, conn: Connection | None):
        super().__init__(kind, valid)
        self.id = job_id
        self._stop = stop
        self._conn = conn

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set() or self._stop.is_set()

    def emit(self, event: ev.Event) -> None:
        super().emit(event)
        if self._conn is not None:
            self._conn.send(("event", event))

    def ending(self) -> ev.Failed | None:
        """How the job ended on this rank when it failed (the studio says a rank's failure even if rank 0 waits)."""
        history = self.history()
        return history[-1] if history and isinstance(history[-1], ev.Failed) else None


class RankWorker(LocalWorker):
    """A LocalWorker whose transformers run split over the group, and whose stops are agreed by every rank."""

    def __init__(self, device: torch.device, rank: int, config: GroupConfig):
        super().__init__(device, f"rank-{rank}")
        self.rank = rank
        self.config = config
        self.decodes = rank == 0
        self.splits: dict[str, TokenSplit] = {}

    def _before_memory(self, pipe: Any) -> None:
        self.splits = {}
        for name in ("transformer", "transformer_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                self.splits[name] = split_transformer(module, self.config.degree, self.device)

    def run_record(self) -> dict[str, Any]:
        return {
            **super().run_record(),
            "parallel": {
                "degree": self.config.degree,
                "kind": KIND,
                "backend": self.config.backend,
                # measured on the modules during this job: the tokens each expert's first block saw on rank 0
                "experts": {name: split.seen() for name, split in self.splits.items()},
            },
        }

    def checkpoint(self, job: Job, stage: str) -> None:
        """Stop at the same point on every rank: while denoising, a stop asked on any rank is agreed by all.

        The ranks meet in attention's all-to-all every step, so one rank stopping alone would leave the others
        waiting there; decoding runs on rank 0 only and stops on its own. A long video's source is read and its
        windows are decoded on every rank (the next window starts from the frames), in step, so there the stops
        while reading and decoding are agreed too."""
        alone = ("save",) if job.valid.windows else ("decode", "decoding", "save")
        if stage in alone:
            return super().checkpoint(job, stage)
        flag = torch.tensor([1 if job.cancel_requested else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item():
            job.cancel()
            raise Cancelled(stage)


class TokenSplit:
    """Watches one transformer's split: the tokens of a whole video and the tokens its first block saw here.

    It also turns on diffusers' ulysses_anything for a video whose token count does not divide by the degree (an
    uneven split); an even one keeps the plain all-to-all, which needs no exchange of sizes."""

    def __init__(self, module: torch.nn.Module, degree: int, gather_here: bool):
        self.degree = degree
        self.total = 0
        self.local = 0
        patch = module.config.patch_size
        config = module._parallel_config.context_parallel_config
        self.group = config._flattened_mesh.get_group()

        def whole(_module: Any, args: tuple, kwargs: dict) -> None:
            latents = kwargs.get("hidden_states", args[0] if args else None)
            _, _, frames, height, width = latents.shape
            self.total = (frames // patch[0]) * (height // patch[1]) * (width // patch[2])
            config.ulysses_anything = self.total % degree != 0

        def here(_module: Any, _args: tuple, output: Any) -> None:
            self.local = (output[0] if isinstance(output, tuple) else output).shape[1]

        module.register_forward_pre_hook(whole, with_kwargs=True)
        module.blocks[0].register_forward_hook(here)
        if gather_here:
            module.proj_out.register_forward_hook(self._gather)

    def _gather(self, _module: Any, _args: tuple, output: torch.Tensor) -> torch.Tensor:
        """The ranks' shares of proj_out's output, whole again, through an all-gather of equal sizes.

        Why ours: gloo's all-gather takes equal sizes only, and an uneven split (ulysses_anything) gives the first
        ranks one token more; diffusers gathers unequal sizes, which NCCL takes, so on CUDA its own gather runs."""
        shares = [len(part) for part in torch.arange(self.total).tensor_split(self.degree)]
        longest = max(shares)
        padded = torch.nn.functional.pad(output, (0, 0, 0, longest - output.shape[1]))
        gathered = [torch.empty_like(padded) for _ in shares]
        dist.all_gather(gathered, padded.contiguous(), group=self.group)
        return torch.cat([part[:, :share] for part, share in zip(gathered, shares, strict=True)], dim=1)

    def seen(self) -> dict[str, int]:
        return {"tokens": self.total, "tokens_on_rank_0": self.local}


def split_transformer(module: torch.nn.Module, degree: int, device: torch.device) -> TokenSplit:
    """Ulysses context parallelism on one transformer (diffusers' own plan for WanTransformer3DModel; on the CPU
    path its last gather is TokenSplit's)."""
    from diffusers import ContextParallelConfig

    plan = None
    if device.type == "cpu":
        plan = {name: part for name, part in module._cp_plan.items() if name != "proj_out"}
    try:
        with _cpu_device_count(device):
            module.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree), cp_plan=plan)
    except ValueError as exc:  # an attention kernel that cannot run split, say
        raise ModelLoadError(
            f"its transformer cannot be split over {degree} processes ({exc})",
            "Start with --attention native, or without --parallel.",
        ) from None
    return TokenSplit(module, degree, gather_here=plan is not None)


@contextlib.contextmanager
def _cpu_device_count(device: torch.device) -> Iterator[None]:
    """diffusers 0.42.1 (ModelMixin._resolve_parallel_config) picks each rank's device as
    `rank % torch.accelerator.device_count()`, which is a division by zero on a machine without an accelerator.
    On the CPU path only, and only for that call, the CPU counts as one device; on CUDA nothing is changed."""
    if device.type != "cpu":
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def _quiet(rank: int) -> None:
    """The terminal hears the group once: rank 0 logs like a worker; the others only say what went wrong."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    logging.getLogger("wan_studio").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    diffusers_logging.set_verbosity_error()  # enable_parallelism's "experimental feature" line, on every load
    # diffusers 0.42.1's context-parallel hooks call a torch collective that torch 2.13 marks deprecated, every step
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers.hooks.context_parallel")
    if rank:
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
