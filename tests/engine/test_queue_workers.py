"""The queue in front of several workers: what a waiting job is told, and where a job its worker lost goes next."""

from __future__ import annotations

import threading
import time

from engine import Queued
from engine.admission.queue import JobQueue
from engine.jobs import Job
from wan_ui.progress import status_line


def test_a_waiting_job_hears_the_jobs_ahead_and_the_busy_workers():
    queue = JobQueue(workers=2)
    first, second, third, fourth = (Job("generate") for _ in range(4))
    queue.put(first, second)
    queue.take("worker-1"), queue.take("worker-2")
    queue.put(third, fourth)
    told = [e for e in fourth.history() if isinstance(e, Queued)][-1]
    assert (told.position, told.busy, told.workers) == (3, 2, 2)
    assert status_line(told) == "Waiting in the studio queue: 1 job ahead, 2 of 2 workers busy."
    assert status_line(Queued(9, 1, 1, 2)) == "Starting…"  # a worker is free and nothing waits ahead


def test_a_job_its_worker_lost_goes_first_to_another_worker():
    queue = JobQueue(workers=2)
    waiting, lost = Job("generate"), Job("generate")
    queue.put(lost)
    assert queue.take("worker-1") is lost
    queue.put(waiting)
    lost.avoid = "worker-1"
    queue.put_again(lost)
    assert queue.take("worker-1") is waiting  # not the job it lost
    assert queue.take("worker-2") is lost


def test_with_one_worker_a_lost_job_runs_again_on_it():
    queue = JobQueue(workers=1)
    lost = Job("generate")
    queue.put(lost)
    queue.take("worker-1")
    lost.avoid = "worker-1"
    queue.put_again(lost)
    assert queue.take("worker-1") is lost


def test_a_job_goes_to_a_waiting_worker_that_already_holds_the_model():
    queue = JobQueue(workers=2)
    took: dict[str, Job] = {}

    def take(worker: str, loaded: bool) -> None:
        took[worker] = queue.take(worker, loaded)

    cold = threading.Thread(target=take, args=("worker-1", False))
    warm = threading.Thread(target=take, args=("worker-2", True))
    cold.start(), warm.start()
    time.sleep(0.3)  # both wait
    job, later = Job("generate"), Job("generate")
    queue.put(job)
    warm.join(10)
    assert took["worker-2"] is job and "worker-1" not in took
    queue.put(later)  # once the warm one is busy, the cold one takes what comes
    cold.join(10)
    assert took["worker-1"] is later


def test_a_worker_without_the_model_takes_a_job_the_other_worker_lost():
    queue = JobQueue(workers=2)
    took: dict[str, Job] = {}
    lost = Job("generate")
    lost.avoid = "worker-2"
    warm = threading.Thread(target=lambda: took.setdefault("worker-2", queue.take("worker-2", True)))
    warm.start()
    time.sleep(0.3)
    queue.put_again(lost)
    assert queue.take("worker-1", loaded=False) is lost  # the idle worker that holds the model may not take it
    queue.close()
    warm.join(10)
