"""The engine's one worker thread, on which all MLX work runs.

MLX state (streams, the Metal command queue) is per thread; doing every MLX call on
one thread keeps it simple and keeps the UI thread free.

Two kinds of work reach the worker:

- plain calls (`submit`, `run`, `call`): short synchronous functions, run in order;
- long work (`start`): a generator that yields `Progress` after each step and returns
  its result. The worker owns it: it advances the generator one step at a time, runs
  any plain calls that arrived between two steps (so a feature page opens while the
  index builds), reports progress to the job's listener, and closes the generator when
  the job is cancelled (its `finally` blocks run, so a build can checkpoint). One long
  job runs at a time; later ones wait their turn.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import queue
import sys
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Callable, Generator, TypeVar

from .errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """How far a job has got: `done` of `total` units, and the rate so far.

    Generators yield these with `elapsed` left at 0; the worker fills it in from its
    own clock for the label (a job whose stages change label restarts the rate).
    """

    label: str
    done: int
    total: int
    unit: str = "tokens"
    elapsed: float = 0.0

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if self.done <= 0 or self.total <= 0 or self.elapsed <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    @property
    def finished(self) -> bool:
        return self.total > 0 and self.done >= self.total

    def describe(self) -> str:
        eta = self.eta
        eta_text = f", ETA {eta:,.0f}s" if eta is not None else ""
        return f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({self.rate:,.0f} {self.unit}/s{eta_text})"


# Long work: a generator function that yields Progress and returns its result.
LongWork = Generator[Progress, None, T]
# (job, progress) while a job runs; (job, None) once it has ended, however it ended.
ProgressListener = Callable[["Job", "Progress | None"], None]


def drive(work: "LongWork[T]", on_progress: Callable[[Progress], None] | None = None) -> T:
    """Run long work to the end on this thread (engine code calling engine code, tests)."""
    while True:
        try:
            progress = next(work)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(progress)


class Job:
    """One piece of long work on the worker: its result, its progress, its cancellation."""

    def __init__(self, label: str, work: "LongWork[Any]", listener: ProgressListener | None = None) -> None:
        self.label = label
        self.future: "Future[Any]" = Future()
        self.last: Progress | None = None
        self._work = work
        self._listener = listener
        self._cancel = threading.Event()
        self._clock: tuple[str, float] | None = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self.future.done()

    def result(self, timeout: float | None = None) -> Any:
        return self.future.result(timeout)

    # -- worker thread ------------------------------------------------------------------

    def _step(self) -> bool:
        """Advance one step; True once the job has ended (result or exception set)."""
        if self._cancel.is_set() or self.future.cancelled():
            self._work.close()  # runs the generator's finally blocks (checkpoints)
            self._end(exc=Cancelled(self.label))
            return True
        try:
            progress = next(self._work)
        except StopIteration as stop:
            self._end(result=stop.value)
            return True
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the job
            self._end(exc=exc)
            return True
        self._report(progress)
        return False

    def _report(self, progress: Progress) -> None:
        now = time.perf_counter()
        if self._clock is None or self._clock[0] != progress.label:
            self._clock = (progress.label, now)
        self.last = replace(progress, elapsed=now - self._clock[1])
        if self._listener is not None:
            self._listener(self, self.last)

    def _end(self, result: Any = None, exc: BaseException | None = None) -> None:
        if self._listener is not None:
            try:
                self._listener(self, None)
            except Exception:  # noqa: BLE001 - a listener's failure must not lose the result
                pass
        if self.future.cancelled():  # whoever waited has gone
            return
        if exc is not None:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


_WAKE = object()  # queued to wake the loop when a job arrives


class EngineWorker:
    """A single thread that runs all MLX work: plain calls in order, long jobs in turn.

    MLX keeps per-thread streams that must be released on the thread that made them
    before the process exits (`mx.clear_streams()`), or the process aborts at exit
    ("terminate called without an active exception", status 134). The worker does that
    when it stops: on `shutdown()`, or at interpreter exit for workers never shut down.
    """

    _count = 0

    def __init__(self) -> None:
        EngineWorker._count += 1
        self._queue: "queue.Queue[Any]" = queue.Queue()
        self._jobs: "collections.deque[Job]" = collections.deque()
        self._current: Job | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"saetui-mlx-{EngineWorker._count}", daemon=True)
        self._thread.start()
        # At interpreter exit, a worker never shut down still stops and releases its streams.
        self._finalizer = weakref.finalize(self, _stop_thread, self._queue, self._thread)

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                job = self._next_job()
                if job is None:
                    item = self._queue.get()
                elif self._queue.empty():
                    if job._step():
                        with self._lock:
                            self._current = None
                    continue
                else:
                    item = self._queue.get_nowait()
                if item is None:
                    break
                if item is _WAKE:
                    continue
                self._run_call(item)
        finally:
            self._end_jobs()
            _release_mlx_streams()

    def _next_job(self) -> Job | None:
        with self._lock:
            if self._current is None and self._jobs:
                self._current = self._jobs.popleft()
            return self._current

    @staticmethod
    def _run_call(item: tuple) -> None:
        fut, fn, args, kwargs = item
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            fut.set_exception(exc)

    def _end_jobs(self) -> None:
        with self._lock:
            jobs = ([self._current] if self._current else []) + list(self._jobs)
            self._current = None
            self._jobs.clear()
        for job in jobs:
            if not job.done:
                job.cancel()
                job._step()

    # -- plain calls ----------------------------------------------------------------------------

    @property
    def on_worker_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Future[T]":
        if self.on_worker_thread:
            raise RuntimeError("engine code calls engine functions directly, not through the worker")
        if self._closed:
            raise RuntimeError("the engine's worker has been shut down")
        fut: Future[T] = Future()
        self._queue.put((fut, fn, args, kwargs))
        return fut

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await fn(*args, **kwargs) on the worker thread (the UI's way in)."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run on the worker thread and wait (the command line's way in, never the UI's)."""
        return self.submit(fn, *args, **kwargs).result()

    # -- long work --------------------------------------------------------------------------------

    def start(self, label: str, fn: Callable[..., "LongWork[T]"], *args: Any, listener: ProgressListener | None = None, **kwargs: Any) -> Job:
        """Queue long work: `fn(*args, **kwargs)` must return a generator (made on the worker)."""
        if self._closed:
            raise RuntimeError("the engine's worker has been shut down")
        job = Job(label, _deferred(fn, args, kwargs), listener)
        with self._lock:
            self._jobs.append(job)
        self._queue.put(_WAKE)
        return job

    @property
    def current_job(self) -> Job | None:
        with self._lock:
            return self._current

    def find_job(self, label: str) -> Job | None:
        """The running or waiting job with this label that has not ended, if any."""
        with self._lock:
            jobs = ([self._current] if self._current else []) + list(self._jobs)
        return next((j for j in jobs if j.label == label and not j.done and not j.cancelled), None)

    def cancel_jobs(self) -> int:
        """Cancel the running job and those waiting; how many were cancelled."""
        with self._lock:
            jobs = ([self._current] if self._current else []) + list(self._jobs)
        live = [j for j in jobs if not j.done and not j.cancelled]
        for job in live:
            job.cancel()
        self._queue.put(_WAKE)
        return len(live)

    # -- stopping ---------------------------------------------------------------------------------

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Cancel jobs, drop queued calls, let the running step finish, release MLX's streams, stop."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for job in ([self._current] if self._current else []) + list(self._jobs):
                job.cancel()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, tuple):
                item[0].cancel()
        self._queue.put(None)
        if not self.on_worker_thread:
            self._thread.join(timeout)
        self._finalizer.detach()


def _deferred(fn: Callable[..., "LongWork[T]"], args: tuple, kwargs: dict) -> "LongWork[T]":
    """The generator `fn` makes, created on first step (so on the worker thread)."""
    return (yield from fn(*args, **kwargs))


def _stop_thread(work_queue: "queue.Queue[Any]", thread: threading.Thread) -> None:
    work_queue.put(None)
    if thread is not threading.current_thread():
        thread.join(10.0)


def _release_mlx_streams() -> None:
    mx = sys.modules.get("mlx.core")
    clear = getattr(mx, "clear_streams", None)
    if clear is not None:
        try:
            clear()
        except Exception:  # pragma: no cover - nothing to do about it at exit
            pass


# The main thread's own streams (workers release theirs as they stop).
atexit.register(_release_mlx_streams)
