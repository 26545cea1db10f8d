"""The engine's one worker thread, on which all MLX work runs.

MLX state (streams, the Metal command queue) is per thread; doing every MLX call on
one thread keeps it simple and keeps the UI thread free. Long work takes a `Job`,
reports progress through it and checks it for cancellation between batches.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
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
    """A single thread that runs all MLX work, in submission order."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saetui-mlx")
        self._thread_ident: int | None = None
        self._executor.submit(self._remember_thread).result()

    def _remember_thread(self) -> None:
        self._thread_ident = threading.get_ident()

    @property
    def on_worker_thread(self) -> bool:
        return threading.get_ident() == self._thread_ident

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Future[T]":
        if self.on_worker_thread:
            # Already on the worker (engine code calling engine code): run inline, since
            # waiting for our own queue would deadlock.
            fut: Future[T] = Future()
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)
            return fut
        return self._executor.submit(fn, *args, **kwargs)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await fn(*args, **kwargs) on the worker thread."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run on the worker thread and wait (for the command line, never the UI)."""
        return self.submit(fn, *args, **kwargs).result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
