"""The engine's one worker thread, on which all MLX work runs.

MLX state (streams, the Metal command queue) is per thread; doing every MLX call on
one thread keeps it simple and keeps the UI thread free. Long work takes a `Job`,
reports progress through it and checks it for cancellation between batches.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import sys
import weakref
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """How far a job has got: `done` of `total` units, and the rate so far."""

    label: str
    done: int
    total: int
    unit: str
    elapsed: float

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

    def describe(self) -> str:
        eta = self.eta
        eta_text = f", ETA {eta:,.0f}s" if eta is not None else ""
        return f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({self.rate:,.0f} {self.unit}/s{eta_text})"


ProgressCallback = Callable[[Progress], None]


class Job:
    """One piece of long work: progress out, cancellation in."""

    def __init__(self, label: str = "", on_progress: ProgressCallback | None = None, min_interval: float = 0.1) -> None:
        self.label = label
        self._on_progress = on_progress
        self._cancel = threading.Event()
        self._started = time.perf_counter()
        self._last_report = 0.0
        self._min_interval = min_interval
        self.last: Progress | None = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise `Cancelled` if the user asked to stop."""
        if self._cancel.is_set():
            raise Cancelled(self.label)

    def report(self, done: int, total: int, unit: str = "tokens", force: bool = False) -> None:
        now = time.perf_counter()
        self.last = Progress(self.label, int(done), int(total), unit, now - self._started)
        if self._on_progress is None:
            return
        if force or done >= total or now - self._last_report >= self._min_interval:
            self._last_report = now
            self._on_progress(self.last)


class EngineWorker:
    """A single thread that runs all MLX work, in submission order.

    MLX keeps per-thread streams that must be released on the thread that made them
    before the process exits (`mx.clear_streams()`), or the process aborts at exit
    ("terminate called without an active exception", status 134). The worker does that
    when it stops: on `shutdown()`, or at interpreter exit for workers never shut down.
    """

    _count = 0

    def __init__(self) -> None:
        EngineWorker._count += 1
        self._queue: "queue.Queue[tuple[Future, Callable[..., Any], tuple, dict] | None]" = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"saetui-mlx-{EngineWorker._count}", daemon=True)
        self._thread.start()
        _LIVE_WORKERS.add(self)

    def _loop(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                fut, fn, args, kwargs = item
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(exc)
                finally:
                    del item, fut, fn, args, kwargs
        finally:
            _release_mlx_streams()

    @property
    def on_worker_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Future[T]":
        fut: Future[T] = Future()
        if self.on_worker_thread:
            # Already on the worker (engine code calling engine code): run inline, since
            # waiting for our own queue would deadlock.
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)
            return fut
        if self._closed:
            raise RuntimeError("the engine's worker has been shut down")
        self._queue.put((fut, fn, args, kwargs))
        return fut

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await fn(*args, **kwargs) on the worker thread."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run on the worker thread and wait (for the command line, never the UI)."""
        return self.submit(fn, *args, **kwargs).result()

    def shutdown(self, timeout: float | None = 30.0) -> None:
        """Drop queued work, let the running call finish, release MLX's streams, stop."""
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        self._queue.put(None)
        if not self.on_worker_thread:
            self._thread.join(timeout)
        _LIVE_WORKERS.discard(self)


_LIVE_WORKERS: "weakref.WeakSet[EngineWorker]" = weakref.WeakSet()


def _release_mlx_streams() -> None:
    mx = sys.modules.get("mlx.core")
    clear = getattr(mx, "clear_streams", None)
    if clear is not None:
        try:
            clear()
        except Exception:  # pragma: no cover - nothing to do about it at exit
            pass


@atexit.register
def _shutdown_all() -> None:
    for worker in list(_LIVE_WORKERS):
        worker.shutdown(timeout=10.0)
    _release_mlx_streams()  # the main thread's own streams
