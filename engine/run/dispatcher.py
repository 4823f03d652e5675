"""The pool's Ray driver, in a process of its own that the studio starts (run/pool.py is the studio's side).

Why a process of its own: a Ray driver whose cluster goes away is ended by Ray itself (after about a minute
without its GCS), and the studio must keep serving its page and Gallery then. So the driver lives here: it connects
to the cluster (or starts a local one bound to 127.0.0.1), places the worker actors, streams each job's events from
its actor to the studio over one pipe, and reports the pool's state every second. When the cluster cannot be
reached it says so and exits; the studio starts it again until the cluster is back.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .worker import leave_with

ROOT = Path(__file__).resolve().parents[2]  # the studio's code, sent to the cluster's workers (runtime_env)
ENV_PASSED = ("WAN_STUDIO_CACHE", "HF_HUB_OFFLINE", "HF_HOME", "HF_TOKEN", "TOKENIZERS_PARALLELISM")
HEALTH_EVERY_S = 1.0
CONNECT_TIMEOUT_S = 30.0  # ray.init keeps trying an address nobody answers on; the studio tries again later
PLACE_TIMEOUT_S = 600.0  # workers wait for free GPUs (or CPUs) and import torch before they answer
_connected = threading.Event()


@dataclass(frozen=True)
class PoolConfig:
    address: str | None  # None: a local Ray instance on 127.0.0.1, started here and stopped with this process
    workers: int
    parallel: int  # GPUs per worker (a parallel group) on a cluster with GPUs
    object_store_bytes: int = 512 * 2**20  # the local instance's shared memory: events and MP4s pass through it


def dispatcher_main(config: PoolConfig, conn: Connection, parent: int) -> None:
    """The process entry point: connect, place the workers, then serve the studio until told to stop."""
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    leave_with(parent, _shutdown_ray)  # a local Ray instance ends with its driver
    _quiet()
    threading.Thread(target=_give_up_after, args=(CONNECT_TIMEOUT_S, config, send), daemon=True).start()
    try:
        ray, actors = _connect(config)
    except PlacementTimeout as exc:
        send(("down", str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - any failure to reach the cluster is said in one line
        send(("down", _unreachable(config, exc)))
        return
    _connected.set()
    pool = Dispatcher(ray, actors, config, send)
    send(("up", len(actors)))
    threading.Thread(target=pool.watch, name="wan-studio-pool-watch", daemon=True).start()
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "stop":
                break
            if message[0] == "run":
                threading.Thread(target=pool.run, args=message[1:], daemon=True).start()
            elif message[0] == "cancel":
                pool.cancel(*message[1:])
    finally:
        pool.stop()


class Dispatcher:
    """The driver's side of the pool: one thread per running job, one that watches the cluster."""

    def __init__(self, ray: Any, actors: list, config: PoolConfig, send: Callable[[tuple], None]):
        self.ray = ray
        self.actors = actors
        self.config = config
        self.send = send
        self.busy: dict[int, int] = {}  # worker index -> job id
        self.stopping = False

    def run(self, job_id: int, index: int, kind: str, valid: Any, load: Any, options: Any) -> None:
        """Stream one job from its actor to the studio; a dead actor is said as ("lost", why)."""
        from ray.exceptions import ActorUnavailableError, RayActorError

        self.busy[index] = job_id
        deadline = time.monotonic() + PLACE_TIMEOUT_S
        started = False
        try:
            while True:
                try:
                    for ref in self.actors[index].run.remote(job_id, kind, valid, load, options):
                        item = self.ray.get(ref)
                        started = True
                        self.send((item[0], job_id, *item[1:]))
                    return
                except ActorUnavailableError:
                    if started or time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)  # Ray is starting the worker again after a death: the job waits for it
        except RayActorError as exc:
            self.send(("lost", job_id, _death(exc, index)))
        except Exception as exc:  # noqa: BLE001 - the studio hears of it; this process keeps serving
            self.send(("lost", job_id, f"worker {index + 1} could not run it ({exc.__class__.__name__}: {exc})"))
        finally:
            self.busy.pop(index, None)

    def cancel(self, job_id: int, index: int) -> None:
        self.actors[index].cancel.remote(job_id)

    def watch(self) -> None:
        """Every second: each worker's state (or that it is restarting), the machines, and whether the cluster is
        still there; when it is not, say so and end this process (the studio starts another)."""
        while not self.stopping:
            try:
                nodes = [n for n in self._nodes() if n.get("Alive")]
            except Exception as exc:  # noqa: BLE001 - unreachable, however Ray says it
                if self.stopping:
                    return
                self.send(("down", _unreachable(self.config, exc)))
                os._exit(0)
            if not nodes:
                self.send(("down", _unreachable(self.config, None)))
                os._exit(0)
            states = []
            for index, actor in enumerate(self.actors):
                try:
                    state, identity = self.ray.get(actor.state.remote(), timeout=2)
                    states.append((state, identity, index in self.busy))
                except Exception:  # noqa: BLE001 - a worker being restarted by Ray
                    states.append((None, {"index": index + 1}, index in self.busy))
            self.send(("pool", states, len(nodes)))
            time.sleep(HEALTH_EVERY_S)

    def _nodes(self, timeout: float = 5.0) -> list[dict]:
        """ray.nodes(), which waits for the GCS as long as Ray lets it when the cluster is gone: asked aside."""
        box: dict[str, Any] = {}

        def ask() -> None:
            try:
                box["nodes"] = self.ray.nodes()
            except Exception as exc:  # noqa: BLE001
                box["error"] = exc

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(timeout)
        if "error" in box:
            raise box["error"]
        if "nodes" not in box:
            raise TimeoutError(f"no answer within {timeout:.0f} s")
        return box["nodes"]

    def stop(self) -> None:
        self.stopping = True
        for actor in self.actors:
            try:
                self.ray.get(actor.stop.remote(), timeout=10)
            except Exception:  # noqa: BLE001,S110 - ending anyway
                pass
        self.ray.shutdown()  # a local instance stops with its driver


def _connect(config: PoolConfig) -> tuple[Any, list]:
    """Join the cluster at `config.address`, or start a local instance only this machine can reach."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reports to anyone
    if config.address is not None and config.address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost"):
        # a cluster of this machine only: Ray would otherwise swap 127.0.0.1 for the machine's network address
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if config.address is None:
        # every server of the local instance on 127.0.0.1 (Ray binds the loopback only when it runs "without
        # clusters"), and a token only this process and its workers know
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    logging.getLogger("ray").setLevel(logging.ERROR)  # its notices about packaging and signals are not the user's
    import ray

    from .remote import WorkerActor

    ray.init(
        address=config.address or "local",
        include_dashboard=False,
        log_to_driver=False,  # a worker's traceback stays in Ray's logs; the studio says one line
        logging_level=logging.ERROR,
        configure_logging=False,
        object_store_memory=config.object_store_bytes if config.address is None else None,
        # CPU workers of a local instance share the cores (each asks Ray for one): every worker gets placed
        num_cpus=max(os.cpu_count() or 1, config.workers) if config.address is None else None,
        runtime_env={
            "working_dir": str(ROOT),
            "excludes": ["/outputs", "/tests", "/test-artifacts", "/loras", "/.whl", "*.mp4"],
            "env_vars": {k: os.environ[k] for k in ENV_PASSED if k in os.environ},
        },
    )
    gpus = ray.cluster_resources().get("GPU", 0)
    resources = {"num_gpus": config.parallel, "num_cpus": 1} if gpus else {"num_cpus": 1}
    actor_class = ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=4)(WorkerActor)
    actors = [actor_class.options(**resources).remote(i, config.parallel) for i in range(config.workers)]
    _connected.set()  # the cluster answered; placing the workers may take longer
    try:
        ray.get([a.state.remote() for a in actors], timeout=PLACE_TIMEOUT_S)  # each is placed and has started
    except ray.exceptions.GetTimeoutError:
        need = f"{config.parallel} GPU{'s' if config.parallel > 1 else ''}" if gpus else "a CPU"
        raise PlacementTimeout(
            f"{config.workers} workers could not all be placed on the Ray cluster within {PLACE_TIMEOUT_S:.0f} s "
            f"(each needs {need} of its own): add machines to the cluster or start with fewer --workers"
        ) from None
    return ray, actors


class PlacementTimeout(Exception):
    """The cluster answers but has no room for every worker; args[0] says so in the user's words."""


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()


def _quiet() -> None:
    """Ray's core writes its retries and warnings to stderr (a line every few seconds while a cluster is away) and
    its driver a worker's death to stdout: both go to a log file; the studio hears what matters through the pipe
    and says it in one line."""
    from ..models.tiny import cache_root

    folder = cache_root() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    log_file = os.open(folder / "ray-driver.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_file, 1)  # Ray's driver prints its workers' deaths to stdout
    os.dup2(log_file, 2)
    os.close(log_file)


def _give_up_after(seconds: float, config: PoolConfig, send) -> None:
    """Say the cluster cannot be reached when ray.init has not connected in time, and end this process."""
    if not _connected.wait(seconds):
        send(("down", _unreachable(config, TimeoutError(f"no answer within {seconds:.0f} s"))))
        os._exit(0)


def _unreachable(config: PoolConfig, exc: Exception | None) -> str:
    where = f"The Ray cluster at {config.address}" if config.address else "The local Ray instance"
    why = f" ({exc.__class__.__name__})" if exc is not None else ""
    return f"{where} cannot be reached{why}: no worker can take jobs until it is back"


def _death(exc: Exception, index: int) -> str:
    return f"worker {index + 1} stopped while running it ({exc.__class__.__name__})"
