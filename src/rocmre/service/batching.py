"""Dynamic batching: concurrent /predict and /predict/batch requests are grouped into shared forward passes.

Requests queue (a bounded queue: 503 with ``Retry-After`` when full). A worker takes every request waiting (up to
``GATHER_PASSES`` times ``batch_size`` pairs), and waits at most ``delay_ms`` for more while it has fewer than
``batch_size`` pairs; then, in one model thread under the model lock, it resolves each request's pairs (an error
answers that request only), groups all pairs by the shape of their model input, runs one forward pass per group (at
most ``batch_size`` pairs each), and answers each request with its own predictions as soon as its last pair is
scored. While it runs, the next batch gathers. Taking more than one pass's worth at a time is what fills the passes:
under load the waiting pairs spread over several shapes.

Answers are batch-invariant: scoring pads token ids to a multiple of 8 (``SCORING_PAD_MULTIPLE``), and pairs share
a forward pass only when their inputs have the same padded shape (token count rounded up to 8, image or not,
crops, image object or not), so a pair is padded exactly as it is when scored alone. It then gets the same
relation, ranking and scores alone or in any company: bit for bit under bf16 (oneDNN's kernels do not depend on
the batch), within about 1e-7 under fp32 (the BLAS may sum in another order for another batch size). Grouping by
the padded length rather than the exact one makes the passes several times larger.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rocmre.data.record import RelationRecord
from rocmre.inference.extractor import EntityNotFoundError, PairInput, Prediction, RelationExtractor
from rocmre.modeling.batching import padded_length
from rocmre.modeling.features import PairFeatures
from rocmre.modeling.runtime import SCORING_PAD_MULTIPLE
from rocmre.service.limits import Refusal, check_pair, clean_message
from rocmre.service.metrics import ServiceMetrics

DEFAULT_BATCH_SIZE = 32
DEFAULT_BATCH_DELAY_MS = 2.0
DEFAULT_MAX_QUEUE = 1024
#: a worker takes at most this many forward passes' worth of pairs (``batch_size`` each) at a time
GATHER_PASSES = 8
#: how much lower the model thread (and the thread pool its forward passes start) runs than the event loop, in
#: Linux nice steps: on a busy CPU, /health and request parsing get a core the moment they need one
MODEL_THREAD_NICE = 5


def lower_thread_priority(steps: int = MODEL_THREAD_NICE) -> None:
    """Run the calling thread ``steps`` nice steps lower (Linux: niceness is per thread, and threads it starts
    inherit it); a no-op where that is not possible."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + steps))


@dataclass
class Job:
    """One request's pairs, their top-k, and where its answer goes."""

    pairs: list[PairInput]
    top_k: list[int]
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchStats:
    """What the batcher did: forward passes run, pairs answered, the largest pass, requests refused (queue full)."""

    forward_passes: int = 0
    pairs: int = 0
    largest: int = 0
    refused: int = 0
    sizes: list[int] = field(default_factory=list)  # the last 1,000 forward-pass sizes

    def record(self, size: int) -> None:
        self.forward_passes += 1
        self.pairs += size
        self.largest = max(self.largest, size)
        self.sizes = [*self.sizes[-999:], size]


def pair_error(error: Exception, prefix: str) -> Exception:
    """A resolver's or model's exception as the answer a client gets (its item named by ``prefix``)."""
    if isinstance(error, EntityNotFoundError):
        return EntityNotFoundError(prefix + clean_message(error), error.candidates)
    if isinstance(error, ValueError | TypeError):
        return Refusal(422, prefix + clean_message(error), "invalid_pair")
    if isinstance(error, MemoryError):
        return Refusal(413, "the input is too large to process (out of memory)", "out_of_memory")
    return error


def answer(job: Job, outcome: Any) -> None:
    """Settle a request's future with its predictions or the exception that answers it (once)."""
    if job.future.done():
        return
    if isinstance(outcome, BaseException):
        job.future.set_exception(outcome)
    else:
        job.future.set_result(outcome)


class DynamicBatcher:
    """Groups concurrent requests into shape-uniform forward passes of ``extractor`` (see the module)."""

    def __init__(self, extractor: RelationExtractor, lock: threading.Lock, batch_size: int = DEFAULT_BATCH_SIZE,
                 delay_ms: float = DEFAULT_BATCH_DELAY_MS, max_queue: int = DEFAULT_MAX_QUEUE,
                 metrics: ServiceMetrics | None = None) -> None:
        """``metrics``: where queue depth, pass sizes, pass times and queue waits are exported (none: nowhere)."""
        if batch_size < 1 or delay_ms < 0 or max_queue < 1:
            raise ValueError(f"batch_size ({batch_size}) and max_queue ({max_queue}) must be >= 1, delay_ms "
                             f"({delay_ms}) >= 0")
        self.extractor = extractor
        self.lock = lock
        self.batch_size = batch_size
        self.delay = delay_ms / 1000
        self.max_queue = max_queue
        self.pending = 0  # pairs queued or running
        self.stats = BatchStats()
        self.metrics = metrics
        if metrics is not None:
            metrics.watch_queue(lambda: self.pending, max_queue)
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None

    # -- the event-loop side ---------------------------------------------------------------------
    async def predict(self, pairs: list[PairInput], top_k: list[int]) -> list[Prediction]:
        """Predictions for one request's ``pairs`` (each with its own top-k), computed with whatever else is
        waiting. 503 when the queue holds ``max_queue`` pairs already."""
        queue = self._started()
        if self.pending and self.pending + len(pairs) > self.max_queue:
            self.stats.refused += 1
            raise Refusal(503, f"the server is busy: {self.pending} pairs are waiting (the limit is {self.max_queue}; "
                               "see --max-queue); retry shortly", "queue_full", headers={"Retry-After": "1"})
        job = Job(list(pairs), list(top_k), asyncio.get_running_loop().create_future())
        self.pending += len(job.pairs)
        queue.put_nowait(job)
        return await job.future

    def _started(self) -> asyncio.Queue[Job]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop, self._queue, self.pending = loop, asyncio.Queue(), 0
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="rocmre-model",
                                                    initializer=lower_thread_priority)
            self._task = loop.create_task(self._work(), name="rocmre-batcher")
        assert self._queue is not None
        return self._queue

    async def _gather(self, queue: asyncio.Queue[Job]) -> list[Job]:
        """The next batch: the first waiting request, then all others waiting (up to ``GATHER_PASSES`` passes'
        worth of pairs), then up to ``delay`` s more for new ones while the batch has fewer than ``batch_size``
        pairs."""
        jobs = [await queue.get()]
        size = len(jobs[0].pairs)
        deadline = asyncio.get_running_loop().time() + self.delay
        while size < GATHER_PASSES * self.batch_size:
            if queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if size >= self.batch_size:
                    break
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = queue.get_nowait()
            jobs.append(job)
            size += len(job.pairs)
        return jobs

    async def _work(self) -> None:
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        while True:
            jobs = await self._gather(queue)
            live = [j for j in jobs if not j.future.done()]  # (a request whose client left is not computed)
            if self.metrics is not None:
                now = time.perf_counter()
                for job in live:
                    self.metrics.queue_wait.observe(now - job.queued)
            def early(j: int, outcome: Any, live: list[Job] = live) -> None:  # from the model thread
                loop.call_soon_threadsafe(answer, live[j], outcome)

            try:
                outcomes: list[Any] = await loop.run_in_executor(self._executor, self.run, live, early) \
                    if live else []
            except Exception as e:  # (run answers each job itself; this is a last resort)
                outcomes = [e] * len(live)
            finally:
                self.pending = max(0, self.pending - sum(len(j.pairs) for j in jobs))
            for job, outcome in zip(live, outcomes, strict=True):
                answer(job, outcome)

    async def close(self) -> None:
        """Stop the worker (requests still queued get no answer) and the model thread; the next request starts
        them again."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # -- the model thread --------------------------------------------------------------------------
    def resolve(self, pairs: Sequence[PairInput]) -> list[RelationRecord]:
        """Each pair's record, after checking that it resolves to two entities a relation can hold between (its
        error names the item in a request of several pairs)."""
        checked = []
        for i, pair in enumerate(pairs):
            try:
                checked.append(check_pair(pair, self.extractor))
            except Exception as e:
                raise pair_error(e, f"item {i}: " if len(pairs) > 1 else "") from None
        return checked

    def featurize(self, pairs: Sequence[PairInput], records: Sequence[RelationRecord]
                  ) -> list[tuple[Hashable, RelationRecord, PairFeatures]]:
        """Each resolved pair's input shape (padded token count, image, crops, image object), record and features,
        in one pass over all of them (the entity tagger batches its texts); the forward pass reuses them."""
        records, features = self.extractor.featurize(pairs, records)
        return [((padded_length(len(f.input_ids), SCORING_PAD_MULTIPLE), p.image is not None, len(f.crops),
                  f.object_box is not None), r, f)
                for r, f, p in zip(records, features, pairs, strict=True)]

    def prepare(self, jobs: list[Job], outcomes: list[Any]
                ) -> dict[int, list[tuple[Hashable, RelationRecord, PairFeatures]]]:
        """Every job's featurised pairs (a job whose pairs do not resolve gets its error in ``outcomes``): all
        jobs' pairs in one featurisation, or job by job if that fails, so that only the failing job's request
        fails."""
        resolved: dict[int, list[RelationRecord]] = {}
        for j, job in enumerate(jobs):
            try:
                resolved[j] = self.resolve(job.pairs)
            except Exception as e:
                outcomes[j] = e
        order = list(resolved)
        try:
            flat = self.featurize([p for j in order for p in jobs[j].pairs], [r for j in order for r in resolved[j]])
        except Exception:
            out = {}
            for j in order:
                try:
                    out[j] = self.featurize(jobs[j].pairs, resolved[j])
                except Exception as e:
                    outcomes[j] = pair_error(e, "")
            return out
        out, start = {}, 0
        for j in order:
            out[j], start = flat[start:start + len(jobs[j].pairs)], start + len(jobs[j].pairs)
        return out

    def forward(self, prepared: list[tuple[RelationRecord, PairFeatures]], top_k: list[int]) -> list[Prediction]:
        """One forward pass over shape-uniform featurised pairs; each prediction cut to its own top-k."""
        start = time.perf_counter()
        records, feats = [r for r, _ in prepared], [f for _, f in prepared]
        preds = self.extractor.predict_features(records, feats, top_k=max(top_k))
        self.stats.record(len(prepared))
        if self.metrics is not None:
            self.metrics.observe_pass(len(prepared), time.perf_counter() - start)
        return [dataclasses.replace(p, top_k=p.top_k[:k]) for p, k in zip(preds, top_k, strict=True)]

    def run(self, jobs: list[Job], done: Callable[[int, Any], None] | None = None
            ) -> list[list[Prediction] | BaseException]:
        """Every job's predictions (or the exception that answers it), computed in shape-uniform groups;
        ``done(j, outcome)`` is called as soon as job ``j``'s outcome is complete."""
        delivered: set[int] = set()

        def deliver(touched: Iterable[int]) -> None:
            for j in touched:
                complete = isinstance(outcomes[j], BaseException) or all(p is not None for p in outcomes[j])
                if done is not None and complete and j not in delivered:
                    delivered.add(j)
                    done(j, outcomes[j])

        with self.lock:
            outcomes: list[Any] = [None] * len(jobs)
            prepared: dict[tuple[int, int], tuple[RelationRecord, PairFeatures]] = {}
            groups: dict[Hashable, list[tuple[int, int]]] = defaultdict(list)
            featurized_jobs = self.prepare(jobs, outcomes)
            deliver(j for j in range(len(jobs)) if j not in featurized_jobs)
            for j, featurized in featurized_jobs.items():
                outcomes[j] = [None] * len(jobs[j].pairs)
                for i, (key, record, feats) in enumerate(featurized):
                    groups[key].append((j, i))
                    prepared[j, i] = (record, feats)
            for members in groups.values():
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start:start + self.batch_size]
                    self._run_chunk(jobs, outcomes, prepared, chunk)
                    deliver(dict.fromkeys(j for j, _ in chunk))
        return outcomes

    def _run_chunk(self, jobs: list[Job], outcomes: list[Any],
                   prepared: dict[tuple[int, int], tuple[RelationRecord, PairFeatures]],
                   chunk: list[tuple[int, int]]) -> None:
        chunk = [(j, i) for j, i in chunk if not isinstance(outcomes[j], BaseException)]
        if not chunk:
            return
        try:
            preds = self.forward([prepared[m] for m in chunk], [jobs[j].top_k[i] for j, i in chunk])
        except Exception as e:
            if len(chunk) == 1:
                j, i = chunk[0]
                outcomes[j] = pair_error(e, f"item {i}: " if len(jobs[j].pairs) > 1 else "")
                return
            for member in chunk:  # one pair failed the pass: run each alone, so that only its request fails
                self._run_chunk(jobs, outcomes, prepared, [member])
            return
        for (j, i), pred in zip(chunk, preds, strict=True):
            outcomes[j][i] = pred
