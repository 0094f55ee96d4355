"""Slide-by-slide work on local worker processes or a Dask cluster.

Tiling (:func:`histo_utils.tiling.tile_slides`) and slide features
(:func:`histo_utils.features.extract_slide_features`) split their work by
slide: one task per slide, each writing its own result file, gathered at the
end. Where the tasks run is chosen by one ``scheduler`` value:

``""`` or ``None`` (or ``"none"``)
    Local worker processes (``concurrent.futures``), or this process when
    ``workers`` is 1: the compendium's default.
``"local"``
    A :class:`distributed.LocalCluster` of ``workers`` worker processes (one
    thread each) on this machine, started for the call and closed after it.
an address such as ``"tcp://10.0.0.5:8786"``
    A running Dask scheduler (``dask scheduler`` plus ``dask worker`` on
    machines that see the same file system, or dask-jobqueue on SLURM/LSF);
    a path to a scheduler file (``dask scheduler --scheduler-file``) works too.
a :class:`distributed.Client`
    Used as it is and left open (several calls share one cluster).

A slide whose task fails (an exception, or a worker lost more often than the
scheduler's ``allowed-failures``) is reported in :attr:`SlideResults.errors`
and logged; the other slides go on. Because every finished slide is on disk,
a rerun computes only the slides that are missing.

Dask is imported only when a Dask scheduler is asked for.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Union

from tqdm.auto import tqdm
from .errors import InputError, InputTypeError, SchedulerUnreachable, StateError

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

log = logging.getLogger(__name__)

__all__ = ["SchedulerSpec", "SlideResults", "client_for", "map_slides", "is_local", "process_pool", "forked_pool",
           "forked_state", "one_torch_thread", "one_blas_thread"]

#: what a ``scheduler`` argument may be (see the module docstring)
SchedulerSpec = Union[str, None, "Client"]

_LOCAL_NAMES = ("", "none", "null")


def is_local(scheduler: SchedulerSpec) -> bool:
    """True when ``scheduler`` asks for local worker processes (no Dask): ``""``, ``None`` or ``"none"``."""
    return scheduler is None or (isinstance(scheduler, str) and scheduler.strip().lower() in _LOCAL_NAMES)


def _die_with_parent(parent: int) -> None:
    """Pool-worker initializer: end this worker when the process that made it ends (Linux).

    A worker of :class:`concurrent.futures.ProcessPoolExecutor` waits on a
    queue whose pipe it holds both ends of, so it never sees its parent die:
    when a run was killed, its workers went on painting slides, then idled
    holding their memory. ``PR_SET_PDEATHSIG`` makes the kernel send SIGTERM
    to the worker when its parent exits, however it exits (SIGKILL included).
    """
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: the runner still stops the pool on SIGTERM
        return
    if os.getppid() != parent:  # the parent died before the call above: nobody is waiting for us
        os._exit(1)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with torch on one intra-op thread, then restore the caller's setting (also on error).

    For small networks trained side by side in worker processes (08's tile models, 09's folds): one thread
    per model is faster than two sharing a tiny convolution, and the numbers are the same in any process.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_blas_thread(func: Callable) -> Callable:
    """Decorator: run ``func`` with BLAS on one thread (threadpoolctl), for code made of many small SVDs and
    regressions, which BLAS threads slow down (15-25x on a loaded 2-core machine) rather than speed up."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return func(*args, **kwargs)
    return wrapper


def process_pool(workers: int, *, fork: bool = False) -> ProcessPoolExecutor:
    """A :class:`~concurrent.futures.ProcessPoolExecutor` whose workers end with the process that made it.

    Use it for every local pool (tiling, painting, GSEA, tile models, CV folds): a killed run leaves
    no worker processes behind (see :func:`_die_with_parent`). ``fork=True`` starts the workers by
    forking, so they inherit this process's memory (a preloaded tile cache, module state set just
    before) instead of receiving it pickled (Linux, macOS).
    """
    import multiprocessing as mp

    return ProcessPoolExecutor(max_workers=max(1, int(workers)), initializer=_die_with_parent,
                               initargs=(os.getpid(),), mp_context=mp.get_context("fork") if fork else None)


#: what the workers of the running :func:`forked_pool` inherit (``None`` outside one)
_FORKED_STATE: Any = None


@contextlib.contextmanager
def forked_pool(workers: int, state: Any) -> Iterator[ProcessPoolExecutor]:
    """A :func:`process_pool` of forked workers that inherit ``state`` without pickling it.

    For large read-only inputs shared by many small jobs (08's preloaded tile cache, 09's expression
    matrix): the workers read it with :func:`forked_state`, copy-on-write. This process drops its
    reference when the pool closes, also on error.
    """
    global _FORKED_STATE
    _FORKED_STATE = state
    try:
        with process_pool(workers, fork=True) as pool:
            yield pool
    finally:
        _FORKED_STATE = None


def forked_state() -> Any:
    """The ``state`` of the :func:`forked_pool` this worker was forked from."""
    if _FORKED_STATE is None:
        raise StateError("forked_state() is only available in the workers of distributed.forked_pool.")
    return _FORKED_STATE


@contextlib.contextmanager
def client_for(scheduler: SchedulerSpec = "", workers: int = 2, *, timeout: float = 20.0,
               trim_memory: bool = False, **cluster_kwargs: Any) -> Iterator["Client | None"]:
    """A Dask client for ``scheduler``, closed on exit (``None`` for local worker processes).

    Parameters
    ----------
    scheduler
        ``""``/``None``/``"none"``: yields ``None`` (no Dask; callers use local
        processes). ``"local"``: starts a :class:`distributed.LocalCluster` with
        ``workers`` worker processes of one thread each and no dashboard, and
        closes it on exit. An address (``"tcp://host:8786"``) or a scheduler
        file (``*.json``): connects to that running scheduler (the cluster is
        left running on exit). A :class:`distributed.Client`: yielded as it is
        and not closed.
    workers
        Worker processes of a ``"local"`` cluster (ignored otherwise).
    timeout
        Seconds to wait for a connection to a remote scheduler.
    trim_memory
        ``"local"`` only. Dask's nannies set ``MALLOC_TRIM_THRESHOLD_`` in their
        workers by default, which switches off glibc's adaptive allocation
        thresholds; torch then maps and unmaps every activation buffer, and
        feature extraction ran about 30 % slower per worker on our 2-core
        machine. The local cluster leaves glibc's default unless this is True.
    **cluster_kwargs
        Passed to :class:`distributed.LocalCluster` (e.g. ``memory_limit``).

    Yields
    ------
    distributed.Client or None

    Raises
    ------
    ConnectionError
        The scheduler at the given address cannot be reached (the message
        names the address).
    """
    if is_local(scheduler):
        yield None
        return
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if not isinstance(scheduler, str):
        raise InputTypeError(f"scheduler must be '', 'local', a scheduler address or a distributed.Client, "
                        f"got {type(scheduler).__name__}.")
    spec = scheduler.strip()
    if spec.lower() == "local":
        opts = {"n_workers": max(1, int(workers)), "threads_per_worker": 1, "processes": True,
                "dashboard_address": None, **cluster_kwargs}
        log.info("Starting a Dask LocalCluster with %d worker processes", opts["n_workers"])
        import dask

        environ = {} if trim_memory else {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        with dask.config.set(environ):  # read when the nannies are made, inside LocalCluster()
            cluster = LocalCluster(**opts)
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        if spec.endswith(".json") and Path(spec).is_file():
            client = Client(scheduler_file=spec, timeout=timeout)
        else:
            client = Client(spec, timeout=timeout)
    except Exception as e:  # OSError/TimeoutError (nothing listening), ValueError (malformed address)
        raise SchedulerUnreachable(
            f"Cannot connect to the Dask scheduler at '{spec}' ({type(e).__name__}: {e}). Check that "
            "`dask scheduler` runs there and that this machine can reach its port, or set scheduler to "
            "'' (local worker processes) or 'local' (a cluster on this machine).") from e
    log.info("Connected to the Dask scheduler at %s (%d workers)", spec,
             len(client.scheduler_info().get("workers", {})))
    try:
        yield client
    finally:
        client.close()


@dataclass
class SlideResults:
    """What :func:`map_slides` returns.

    Attributes
    ----------
    results
        ``{slide: value returned by the task}`` for the slides that finished,
        in the order the slides were given.
    errors
        ``{slide: "ExceptionType: message"}`` for the slides whose task failed.
    """

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> list[str]:
        """The slides that finished, in the order given."""
        return list(self.results)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def map_slides(func: Callable[..., Any], items: Mapping[str, Any] | Iterable[tuple[str, Any]], *,
               scheduler: SchedulerSpec = "", workers: int = 1, shared: Mapping[str, Any] | None = None,
               desc: str = "slides", progress: bool = True, retries: int = 0) -> SlideResults:
    """Run ``func(item, **shared)`` once per slide; a failed slide is reported, not fatal.

    Parameters
    ----------
    func
        The per-slide task. Must be importable by the workers (a function of
        a module, not of a notebook cell) for worker processes and Dask.
    items
        ``{slide_id: item}`` (or ``(slide_id, item)`` pairs): the argument of
        each task. Keep items small (paths, a slide's tile rows); pass large
        objects once through ``shared``.
    scheduler
        Where the tasks run, see :func:`client_for`: ``""`` local processes
        (``workers`` of them; in this process when ``workers <= 1`` or there
        is one slide), ``"local"`` a Dask LocalCluster, an address, or a
        :class:`distributed.Client`.
    workers
        Local worker processes, or the workers of a ``"local"`` cluster.
    shared
        Keyword arguments of every task. On Dask they are scattered to every
        worker once (``broadcast=True``), not sent with each task; model
        weights go here.
    desc
        Label of the progress bar and of the task keys.
    progress
        Show a tqdm progress bar (slides done).
    retries
        Dask only: times a failing task is retried before it counts as failed
        (a lost worker is always retried by the scheduler, up to its
        ``distributed.scheduler.allowed-failures``).

    Returns
    -------
    SlideResults
        The results of the slides that finished and the errors of the others
        (each also logged as a warning).
    """
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    ids = [sid for sid, _ in pairs]
    if len(set(ids)) != len(ids):
        dup = sorted({s for s in ids if ids.count(s) > 1})
        raise InputError(f"map_slides needs one item per slide; repeated slide IDs: {dup[:5]}.")
    shared = dict(shared or {})
    done: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if pairs:
        bar = tqdm(total=len(pairs), desc=desc, unit="slide", disable=not progress)
        try:
            if is_local(scheduler):
                _run_local(func, pairs, shared, workers, done, errors, bar)
            else:
                with client_for(scheduler, workers) as client:
                    _run_dask(client, func, pairs, shared, desc, retries, done, errors, bar)
        finally:
            bar.close()
    for sid, err in errors.items():
        log.warning("%s: slide %s failed: %s", desc, sid, err)
    return SlideResults(results={sid: done[sid] for sid in ids if sid in done},
                        errors={sid: errors[sid] for sid in ids if sid in errors})


def _run_local(func, pairs, shared, workers, done, errors, bar) -> None:
    """Tasks in this process (``workers <= 1``) or in a pool of worker processes."""
    if workers <= 1 or len(pairs) <= 1:
        for sid, item in pairs:
            try:
                done[sid] = func(item, **shared)
            except Exception as e:  # one slide's failure must not stop the others
                errors[sid] = _describe(e)
            bar.update()
        return
    task = functools.partial(func, **shared) if shared else func
    with process_pool(min(int(workers), len(pairs))) as pool:
        futures = {pool.submit(task, item): sid for sid, item in pairs}
        for fut in as_completed(futures):
            sid = futures[fut]
            try:
                done[sid] = fut.result()
            except Exception as e:  # includes BrokenProcessPool: a crashed worker costs its slides
                errors[sid] = _describe(e)
            bar.update()


def _run_dask(client, func, pairs, shared, desc, retries, done, errors, bar) -> None:
    """One Dask task per slide; shared arguments scattered once to every worker."""
    from distributed import as_completed as dask_as_completed

    token = uuid.uuid4().hex[:8]
    scattered = client.scatter(shared, broadcast=True, hash=False) if shared else {}
    futures = {}
    try:
        for sid, item in pairs:
            fut = client.submit(func, item, **scattered, key=f"{desc}-{sid}-{token}", pure=False,
                                retries=retries)
            futures[fut] = sid
        for fut in dask_as_completed(list(futures)):
            sid = futures[fut]
            if fut.status == "finished":
                try:
                    done[sid] = fut.result()
                except Exception as e:  # e.g. the result cannot be deserialised here
                    errors[sid] = _describe(e)
            else:  # "error" (the task raised, or KilledWorker after repeated worker loss) or "cancelled"
                exc = fut.exception() if fut.status == "error" else None
                errors[sid] = _describe(exc) if exc is not None else f"task {fut.status}"
            fut.release()
            bar.update()
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
        if scattered:
            client.cancel(list(scattered.values()))
