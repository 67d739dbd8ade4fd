"""Rendering on Ray: the same :class:`proxies.synth.Engine` API, with chunks of presets rendered
as Ray tasks on a local or remote Ray cluster (optional extra: ``pip install -e .[ray]``).

:func:`open_ray_engine` returns an ``Engine`` (kind ``"ray"``) whose ``render`` splits a batch
into chunks and renders each chunk in a Ray task, through the synth's own engine opened
*inside* the task's worker process (``synth.open_engine(sample_rate, workers=1, **options)``:
a one-process DawDreamer pool for plugins, the in-process engine for dexed-py). Every synth
behind the seam therefore keeps its determinism protocol and its per-preset fault handling:

* **Determinism.** Every engine renders history-independently (the pool's protocol and fork
  mode, dexed-py's fresh voices), so a preset renders to the same samples in any worker of any
  node: a dataset built with ``data.backend = "ray"`` equals, array for array, the one the
  process pool builds for the same config and seed (``backend`` and ``ray_address`` do not
  enter the dataset fingerprint).
* **A failing preset** is reported as the engine reports it (a
  :class:`proxies.notes.RenderFailure`, its row NaN): a plugin crash is contained by the pool
  running inside the task.
* **A Ray worker killed mid-chunk** (node lost, OOM killer, ``kill -9``) costs a retry of that
  chunk (Ray task retries, ``max_retries``); results are placed by row, so no preset is lost or
  duplicated. A chunk whose worker dies on every attempt comes back as failures (NaN rows) naming
  the cause; any other exception in a task (plugin missing, bad options) is raised here.
* **Resumable** datasets come from :func:`training.data.build_dataset`'s shard files, as with
  the process pool.

A worker process keeps its engine open between tasks (one engine per worker process, keyed by
synth, sample rate and options), so the plugin is loaded once per worker, not once per chunk.

Ray is imported only when an engine is opened. ``address=""`` uses the Ray runtime of this
process if one is up (``ray.init`` already called) and otherwise starts a local one, which stays
up for the engines opened after it (a training run renders its dataset, then its validation
sets) and stops when the process exits (Ray's own exit hook; or call ``ray.shutdown()``);
``"auto"`` or ``"ray://host:10001"`` / ``"host:6379"`` connect to a cluster, whose nodes need
this package (and the synth) installed. Engines kept by idle workers of a long-lived cluster are
released when Ray retires those workers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np

from proxies.notes import Note, RenderFailure, check_duration, check_sample_rate, notes_per_row
from proxies.synth import Engine, Synth, get_synth, list_synths, render_samples

__all__ = ["RayUnavailableError", "open_ray_engine"]

_INSTALL = 'pip install -e ".[ray]"'
#: presets per Ray task at most (a killed worker costs the retry of one chunk)
DEFAULT_CHUNK = 64


class RayUnavailableError(ImportError):
    """``data.backend = "ray"`` (or :func:`open_ray_engine`) without the ``ray`` package."""


def _import_ray():
    try:
        import ray  # noqa: PLC0415  (optional, heavy)
    except ImportError as e:
        raise RayUnavailableError(f"the Ray rendering backend needs the ray package ({e}); install it with "
                                  f"`{_INSTALL}` (in the project's virtualenv), or set data.backend = \"process\"") \
            from None
    return ray


# ------------------------------------------------------------------------------ in the workers
_WORKER_ENGINE: dict[str, Any] = {}  # {"key": ..., "engine": Engine}: this worker process's engine
_WORKER_LOCK = threading.Lock()


def _resolve_synth(ref: str | Synth) -> Synth:
    return ref if isinstance(ref, Synth) else get_synth(ref)


def _worker_engine(ref: str | Synth, sample_rate: int, options: dict) -> Engine:
    """This worker process's engine for (synth, rate, options), opened on first use and kept."""
    synth = _resolve_synth(ref)
    key = (synth.name, int(sample_rate), tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _WORKER_LOCK:
        if _WORKER_ENGINE.get("key") == key:
            return _WORKER_ENGINE["engine"]
        old = _WORKER_ENGINE.pop("engine", None)
        _WORKER_ENGINE.pop("key", None)
        if old is not None:  # one engine per worker (dexed-py: one sample rate per process)
            old.close()
        engine = synth.open_engine(sample_rate, workers=1, **options)
        _WORKER_ENGINE.update(key=key, engine=engine)
        return engine


def _probe_task(ref: str | Synth, sample_rate: int, options: dict) -> tuple[int, int]:
    engine = _worker_engine(ref, sample_rate, options)
    return int(engine.channels), int(engine.sample_rate)


def _reproducible_task(ref: str | Synth, sample_rate: int, options: dict, normalized: np.ndarray) -> np.ndarray:
    return np.asarray(_worker_engine(ref, sample_rate, options).reproducible(normalized), dtype=bool)


def _render_task(ref: str | Synth, sample_rate: int, options: dict, normalized: np.ndarray,
                 notes: list[tuple[Note, ...]], duration_s: float, kill_marker: str | None):
    """Render one chunk in this worker's engine: ``(audio [b, C, T], failures with chunk indices)``.

    ``kill_marker`` is a test hook: the first task to create that file renders half its chunk and
    then kills its own worker process (SIGKILL), as a lost node would.
    """
    engine = _worker_engine(ref, sample_rate, options)
    if kill_marker:
        try:
            fd = os.open(kill_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            half = max(1, len(normalized) // 2)
            engine.render(normalized[:half], notes[:half], duration_s)
            os.kill(os.getpid(), signal.SIGKILL)
    audio, failures = engine.render(normalized, notes, duration_s)
    return np.asarray(audio, dtype=np.float32), list(failures or ())


# ---------------------------------------------------------------------------------- the driver
def _synth_ref(synth: Synth) -> str | Synth:
    """A registered synth travels by name (each worker loads it from the registry); any other
    (a ``vst:`` synth, one registered at run time) travels pickled."""
    if synth.name in list_synths():
        try:
            if get_synth(synth.name) is synth:
                return synth.name
        except Exception:  # noqa: BLE001 - send the object itself
            pass
    return synth


class _RayEngine:
    def __init__(self, synth: str | Synth, sample_rate: int, workers: int, address: str, options: dict):
        self.ray = ray = _import_ray()
        self.synth = get_synth(synth)
        self.ref = _synth_ref(self.synth)
        self.sample_rate = check_sample_rate(sample_rate)
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or int(workers) < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = int(workers)
        options = dict(options)
        self.max_retries = int(options.pop("max_retries", 3))
        self.chunk_size = int(options.pop("chunk_size", DEFAULT_CHUNK))
        self.kill_marker = options.pop("_kill_marker", None)  # test hook (see _render_task)
        if self.chunk_size < 1 or self.max_retries < 0:
            raise ValueError(f"chunk_size must be >= 1 and max_retries >= 0, got {self.chunk_size}, "
                             f"{self.max_retries}")
        self.options = options
        self.owns_runtime = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **kwargs)
            else:
                root = str(Path(__file__).resolve().parents[1])  # this checkout, importable by the workers
                path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
                ray.init(runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
                self.owns_runtime = True
        # else: this process is connected already (ray.init was called); that runtime is used
        self.closed = False
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)
        self._render = remote(_render_task)
        self._probe = ray.remote(num_cpus=1, max_retries=self.max_retries)(_probe_task)
        self._reproducible = ray.remote(num_cpus=1, max_retries=self.max_retries)(_reproducible_task)
        try:  # open the engine once now: a missing plugin or a bad option fails here, not mid-dataset
            self.channels, rate = ray.get(self._probe.remote(self.ref, self.sample_rate, self.options))
        except BaseException as e:
            self.close()
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, Exception) else e) from None
        if rate != self.sample_rate:
            self.close()
            raise RuntimeError(f"the {self.synth.name} engine in a Ray worker opened at {rate} Hz, not "
                               f"{self.sample_rate} Hz")

    def _check(self, normalized: Any) -> np.ndarray:
        n = np.asarray(normalized, dtype=np.float64)
        p = self.synth.spec.n_params
        if n.ndim != 2 or n.shape[1] != p:
            raise ValueError(f"normalized: expected presets of shape [B, {p}] for {self.synth.name}, "
                             f"got shape {n.shape}")
        return n

    def render(self, normalized: Any, notes: Any = (Note(),), duration_s: float = 1.0,
               progress: bool = False) -> tuple[np.ndarray, list[RenderFailure]]:
        if self.closed:
            raise RuntimeError("this Ray engine is closed; open a new one with open_ray_engine(...)")
        ray = self.ray
        duration_s = check_duration(duration_s)
        n = self._check(normalized)
        rows = notes_per_row(notes, n.shape[0], duration_s)
        total = render_samples(duration_s, self.sample_rate)
        audio = np.full((n.shape[0], self.channels, total), np.nan, dtype=np.float32)
        failures: list[RenderFailure] = []
        if n.shape[0] == 0:
            return audio, failures
        size = max(1, min(self.chunk_size, math.ceil(n.shape[0] / self.workers)))
        chunks = [(a, min(a + size, n.shape[0])) for a in range(0, n.shape[0], size)]
        bar = None
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=n.shape[0], desc=f"render {self.synth.name} (ray)", unit="preset")
        in_flight: dict[Any, tuple[int, int]] = {}
        todo = list(chunks)
        try:
            while todo or in_flight:
                while todo and len(in_flight) < self.workers:  # at most `workers` chunks at once
                    a, b = todo.pop(0)
                    ref = self._render.remote(self.ref, self.sample_rate, self.options, n[a:b], rows[a:b],
                                              duration_s, self.kill_marker)
                    in_flight[ref] = (a, b)
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    a, b = in_flight.pop(ref)
                    try:
                        chunk_audio, chunk_failures = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the engine raised: not a preset's fault
                        cause = getattr(e, "cause", None)
                        raise (cause if isinstance(cause, Exception) else e) from None
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                            ray.exceptions.ObjectLostError, ray.exceptions.OutOfMemoryError) as e:
                        reason = f"the Ray worker died on every attempt ({self.max_retries + 1}): " \
                                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        failures += [RenderFailure(i, reason, self.max_retries + 1, (reason,)) for i in range(a, b)]
                    else:
                        audio[a:b] = chunk_audio
                        failures += [dataclasses.replace(f, index=int(f.index) + a) for f in chunk_failures]
                    if bar is not None:
                        bar.update(b - a)
        except BaseException:
            for ref in in_flight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            raise
        finally:
            if bar is not None:
                bar.close()
        return audio, sorted(failures, key=lambda f: f.index)

    def reproducible(self, normalized: Any) -> np.ndarray:
        n = self._check(normalized)
        return self.ray.get(self._reproducible.remote(self.ref, self.sample_rate, self.options, n))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # a runtime this engine started stays up for later engines (see the module docstring)


def open_ray_engine(synth: str | Synth, sample_rate: int, workers: int = 2, address: str = "",
                    **options: Any) -> Engine:
    """Open ``synth``'s real engine on Ray as a :class:`proxies.synth.Engine` (kind ``"ray"``).

    Args:
        synth: a registered name, ``vst:PATH``, or a :class:`proxies.synth.Synth`.
        sample_rate: Hz, an integer in 8000..192000.
        workers: chunks rendered at once (each a Ray task needing 1 CPU, with its own engine).
        address: ``""``: the Ray runtime this process is connected to, else a new local one (kept
            until the process exits); otherwise a cluster address for ``ray.init`` (``"auto"``,
            ``"ray://head:10001"``).
        options: ``max_retries`` (Ray task retries after a worker dies, default 3),
            ``chunk_size`` (presets per task at most, default 64); the rest go to
            ``synth.open_engine`` in the workers (e.g. the pool's ``timeout_s``).

    Returns:
        ``Engine(render, reproducible, close, channels, sample_rate, kind="ray")``; ``render``
        returns what the synth's own engine returns (audio ``[B, C, T]`` float32, NaN rows for
        failures, failures sorted by index).

    Raises:
        RayUnavailableError: ``ray`` is not installed (the message names ``pip install -e .[ray]``).
    """
    impl = _RayEngine(synth, sample_rate, workers, address, options)
    return Engine(render=impl.render, reproducible=impl.reproducible, close=impl.close, channels=impl.channels,
                  sample_rate=impl.sample_rate, kind="ray")
