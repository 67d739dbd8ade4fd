"""Worker processes that render presets through a real plugin: one DawDreamer engine each.

A crash or hang in a worker costs one retry in a fresh worker, then a :class:`RenderFailure`
for that preset (its audio row NaN), never the batch. On Linux presets whose hidden state the
protocol cannot reset (amsynth: noise, sample-and-hold, sync) render in a forked child of a
worker whose own instance never rendered them, which makes every preset reproducible there.
:func:`proxies.host.open_engine` wraps a pool as a :class:`proxies.synth.Engine`.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing as mp
import os
import signal
import time
import weakref
from collections import deque
from multiprocessing.connection import wait as _wait_connections
from typing import Any, Callable, Mapping

import numpy as np

from proxies.host import PluginHost, PluginInfo, _precheck, get_plugin, is_reproducible
from proxies.notes import Note, RenderFailure, check_duration, check_sample_rate, n_samples, notes_per_row

__all__ = ["RenderPool"]


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name} (exit code {exitcode})"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _inject_fault(fault: str) -> None:
    """Test hook: fail the way a broken plugin does (``abort``, ``segv``, ``hang``, ``raise``)."""
    if fault == "abort":
        os.abort()
    elif fault == "segv":
        ctypes.string_at(0)
    elif fault == "hang":
        time.sleep(3600)
    elif fault == "raise":
        raise RuntimeError("injected failure")


class _AttemptFailed(Exception):
    """One render attempt failed in a way the pool should retry (message = the reason)."""


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def _can_fork() -> bool:
    """Whether this worker may fork render processes: Linux, and single-threaded after a fork.

    (OpenBLAS, loaded by NumPy, parks its threads at fork time; anything else running a thread
    would make fork unsafe, and then the worker renders everything itself.)
    """
    if not hasattr(os, "fork") or not os.path.isdir("/proc/self/task"):
        return False
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return _threads() == 1


_PR_SET_PDEATHSIG = 1


def _render_forked(host: PluginHost, n: np.ndarray, notes: tuple[Note, ...], duration_s: float,
                   timeout_s: float, fault: str | None) -> np.ndarray:
    """Render in a forked child of this worker, whose plugin instance has never rendered noise
    or sync presets: every such render starts from the same state (noise RNG at its load seed,
    sync accumulators and S&H counters at 0), so it is reproducible in any worker."""
    import mmap
    import select

    total = n_samples(duration_s, host.sample_rate)
    shape = (host.n_outputs, total)
    buf = mmap.mmap(-1, 4 * shape[0] * shape[1])  # anonymous shared memory, inherited by the child
    rd, wr = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child: render, write the audio into buf, exit without any Python cleanup
        code = 0
        try:
            os.close(rd)
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the worker
            if os.getppid() != parent:
                os._exit(4)
            if fault:
                _inject_fault(fault)
            audio = host._render_checked(n, notes, duration_s)
            np.frombuffer(buf, dtype=np.float32)[:] = audio.reshape(-1)
        except BaseException as e:  # noqa: BLE001 - reported to the worker through the pipe
            code = 3
            with contextlib.suppress(OSError):
                os.write(wr, f"{type(e).__name__}: {e}".encode("utf-8", "replace")[:4000])
        os._exit(code)
    os.close(wr)
    try:
        ready, _, _ = select.select([rd], [], [], timeout_s)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise _AttemptFailed(f"timed out after {timeout_s:g} s (render process killed)")
        chunks = []
        while chunk := os.read(rd, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            raise _AttemptFailed(f"render process crashed: {_signal_name(-os.WTERMSIG(status))}")
        if os.WEXITSTATUS(status) != 0:
            said = b"".join(chunks).decode("utf-8", "replace") or f"exit code {os.WEXITSTATUS(status)}"
            raise _AttemptFailed(f"render raised {said}")
        return np.frombuffer(buf, dtype=np.float32).reshape(shape).copy()
    finally:
        os.close(rd)
        buf.close()


def _worker_main(conn, info: PluginInfo, sample_rate: int, options: dict) -> None:
    """Worker process: one host; renders tasks until told to stop.

    Presets that touch hidden state the protocol cannot reset (noise, S&H, sync) are rendered in
    a forked child, so the worker's own instance never renders them; the rest render here.
    """
    if options.get("quiet", True):
        try:  # DawDreamer/amsynth chatter; crash diagnostics still reach the parent via exit codes
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.close(null)
        except OSError:
            pass
    try:
        host = PluginHost(info, sample_rate, canonicalize=options.get("canonicalize", True),
                          fresh_sync_instances=options.get("fresh_sync_instances", True))
        mode = options.get("fork", True)
        forking = mode is not False and _can_fork()  # checked with the plugin loaded
        fork_noise = mode is True
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", None, f"{type(e).__name__}: {e}"))
        conn.close()
        return
    timeout_s = float(options.get("timeout_s", 60.0))
    conn.send(("ready", None, (os.getpid(), host.n_outputs, host.n_params, forking)))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        if msg is None:
            break
        task_id, normalized, notes, duration_s, fault = msg
        try:
            child_fault = fault[len("child-"):] if fault and fault.startswith("child-") else None
            if fault and not child_fault:
                _inject_fault(fault)
            hidden = forking and (
                (fork_noise and info.uses_noise is not None and bool(info.uses_noise(normalized)))
                or (info.fresh_voices is not None and bool(info.fresh_voices(normalized, notes)))
            )
            if hidden or child_fault:
                audio = _render_forked(host, normalized, notes, duration_s, timeout_s, child_fault)
            else:
                audio = host._render_checked(normalized, notes, duration_s)
            conn.send(("ok", task_id, audio))
        except _AttemptFailed as e:
            conn.send(("err", task_id, str(e)))
        except Exception as e:  # noqa: BLE001 - reported per preset
            conn.send(("err", task_id, f"render raised {type(e).__name__}: {e}"))
    conn.close()


class _Worker:
    def __init__(self, ctx, info: PluginInfo, sample_rate: int, options: dict) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, info, sample_rate, options),
                                name=f"render-{info.name}", daemon=True)
        self.proc.start()
        child.close()
        self.state = "starting"  # starting -> idle <-> busy -> dead
        self.started = time.monotonic()
        self.task: int | None = None
        self.deadline = math.inf
        self.reserved: deque[int] = deque()  # retries that must run here (a fresh worker)
        self.pid: int | None = None

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()
        self.state = "dead"

    def stop(self, timeout: float = 5.0) -> None:
        if self.state != "dead":
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
        self.conn.close()
        self.state = "dead"


def _shutdown_workers(workers: list) -> None:
    for w in list(workers):
        try:
            w.stop()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
    workers.clear()


class RenderPool:
    """Worker processes rendering presets through the real plugin, one engine per worker.

    Each worker runs :class:`PluginHost` (the determinism protocol), so every reproducible
    preset renders bit-identically to :func:`render` in this process, whichever worker takes it.

    **Fork mode** (Linux, default): a worker renders presets that touch state the protocol
    cannot reset (amsynth: noise / S&H waveforms, osc2 sync) in a forked child of itself. Its
    own instance never renders those, so each child starts with the noise generator at its load
    seed and fresh sync accumulators / S&H counters: such renders are then identical in every
    worker (a noise preset equals its render in a fresh process), and sync presets cost a fork
    (~10-20 ms) instead of a new plugin instance (~0.2 s). See :attr:`forking`, :meth:`reproducible`.

    A worker that crashes (the plugin segfaults or aborts), or a render that exceeds
    ``timeout_s``, costs one retry in a fresh worker; a second failure is reported in the
    failure list and the row is NaN. The rest of the batch is unaffected. Workers persist across
    batches. Use as a context manager, or call :meth:`close`.

    Args:
        plugin: registered name, path or :class:`PluginInfo`.
        workers: number of processes (each renders one preset at a time).
        sample_rate: Hz, integer in 8000..192000.
        timeout_s: wall-clock limit per render attempt (s); a hang beyond it kills the worker.
        start_method: ``"spawn"`` (default) or ``"forkserver"``. ``fork`` is refused: a parent
            holding JAX or other threads cannot fork safely.
        startup_timeout_s: limit for a worker to load the plugin.
        progress: show a tqdm bar per batch.
        quiet: silence the workers' stdout (DawDreamer prints on plugin load).
        fork: ``True``: fork mode where the platform allows it (see above); ``"sync"``: fork only
            for sync presets (noise presets render in the worker: faster, not reproducible);
            ``False``: never fork (sync presets get fresh plugin instances).
    """

    def __init__(
        self,
        plugin: str | os.PathLike | PluginInfo = "amsynth",
        workers: int = 2,
        sample_rate: int = 44100,
        *,
        timeout_s: float = 60.0,
        start_method: str = "spawn",
        startup_timeout_s: float = 120.0,
        progress: bool = False,
        quiet: bool = True,
        fork: bool | str = True,
        _options: Mapping[str, Any] | None = None,
    ) -> None:
        self.info = get_plugin(plugin)
        self.sample_rate = check_sample_rate(sample_rate)
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if start_method not in ("spawn", "forkserver"):
            raise ValueError(
                f"start_method must be 'spawn' or 'forkserver', got {start_method!r} "
                "(fork is unsafe once JAX or other threads run in the parent)"
            )
        self.info.check_installed()
        self.n_workers = int(workers)
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.progress = bool(progress)
        self._ctx = mp.get_context(start_method)
        if fork not in (True, False, "sync"):
            raise ValueError(f"fork must be True, False or 'sync', got {fork!r}")
        self.fork_mode = fork
        self._options = {"quiet": bool(quiet), "timeout_s": float(timeout_s), "fork": fork,
                         **dict(_options or {})}
        self._faults: dict[int, tuple[str, int]] = {}  # test hook: batch index -> (kind, times)
        self._workers: list[_Worker] = []
        self._closed = False
        self._n_outputs: int | None = None
        self._n_params: int | None = None
        self._forking: bool | None = None
        self._batch = 0
        self.workers_started = 0
        self._finalizer = weakref.finalize(self, _shutdown_workers, self._workers)
        try:
            for _ in range(self.n_workers):
                self._spawn()
            self._wait_ready(list(self._workers))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "RenderPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker (join; terminate/kill stragglers). Idempotent."""
        self._closed = True
        _shutdown_workers(self._workers)

    @property
    def forking(self) -> bool:
        """True when the workers fork render processes (Linux). With ``fork=True`` *every*
        preset, noise included, then renders bit-identically in any worker of any pool."""
        return bool(self._forking)

    def reproducible(self, normalized: Any) -> np.ndarray:
        """Bool ``[B]``: rows this pool renders identically every time (all, when forking)."""
        n = np.asarray(normalized, dtype=np.float64)
        if self.forking and self.fork_mode is True:
            return np.ones(n.shape[:-1], dtype=bool)
        return is_reproducible(self.info, n)

    @property
    def n_outputs(self) -> int:
        """Output channels of the plugin (known once the workers are ready)."""
        return int(self._n_outputs)

    @property
    def pids(self) -> tuple[int, ...]:
        """Process ids of the live workers (including replacements still loading the plugin)."""
        return tuple(w.proc.pid for w in self._workers if w.state != "dead")

    def _spawn(self) -> _Worker:
        w = _Worker(self._ctx, self.info, self.sample_rate, self._options)
        self._workers.append(w)
        self.workers_started += 1
        return w

    def _on_message(self, w: _Worker, kind: str, payload: Any) -> None:
        if kind == "ready":
            w.pid, n_out, n_params, forking = payload
            self._n_outputs, self._n_params = n_out, n_params
            self._forking = bool(forking) if self._forking is None else self._forking and bool(forking)
            w.state = "idle"
        elif kind == "error":
            w.kill()
            raise RuntimeError(
                f"a render worker could not start {self.info.name} ({self.info.default_path}): {payload}"
            )

    def _wait_ready(self, workers: list[_Worker]) -> None:
        while any(w.state == "starting" for w in workers):
            starting = [w for w in workers if w.state == "starting"]
            left = min(w.started + self.startup_timeout_s for w in starting) - time.monotonic()
            ready = _wait_connections([w.conn for w in starting] + [w.proc.sentinel for w in starting],
                                      timeout=max(0.0, left))
            for w in starting:
                if w.conn in ready:
                    try:
                        kind, _, payload = w.conn.recv()
                    except (EOFError, OSError):
                        w.proc.join(5)
                        w.kill()
                        raise RuntimeError(f"a render worker died while loading {self.info.default_path}: "
                                           f"{_signal_name(w.proc.exitcode)}") from None
                    self._on_message(w, kind, payload)
                elif w.proc.sentinel in ready:
                    w.proc.join(5)
                    code = w.proc.exitcode
                    w.kill()
                    raise RuntimeError(f"a render worker died while loading {self.info.default_path}: "
                                       f"{_signal_name(code)}")
            if not ready and time.monotonic() >= min(w.started for w in starting) + self.startup_timeout_s:
                for w in starting:
                    w.kill()
                raise RuntimeError(f"render workers did not load {self.info.default_path} within "
                                   f"{self.startup_timeout_s:g} s")

    # --------------------------------------------------------------------------- batches
    def render_batch(
        self,
        normalized: Any,
        notes: Any = (Note(),),
        duration_s: float = 1.5,
        progress: bool | None = None,
    ) -> tuple[np.ndarray, list[RenderFailure]]:
        """Render ``normalized [B, P]``.

        Returns:
            ``(audio, failures)``: audio float32 ``[B, C, T]`` in input order (T =
            ``round(duration_s * sample_rate)``), rows of failed presets NaN; failures a list of
            :class:`RenderFailure` sorted by index (empty when all rendered).
        """
        if self._closed:
            raise RuntimeError("this RenderPool is closed; create a new one")
        duration_s = check_duration(duration_s)
        n = _precheck(self.info, np.asarray(normalized, dtype=np.float64), batch=True)
        if n.shape[1] != self._n_params:
            raise ValueError(f"normalized: expected {self._n_params} values per preset, got shape {n.shape}")
        notes = notes_per_row(notes, n.shape[0], duration_s)
        total = n_samples(duration_s, self.sample_rate)
        audio = np.full((n.shape[0], self._n_outputs, total), np.nan, dtype=np.float32)
        self._batch += 1
        try:
            failures = self._run(n, notes, duration_s, audio, self.progress if progress is None else progress)
        except BaseException:  # e.g. KeyboardInterrupt: no worker may hold a stale task
            for w in [w for w in self._workers if w.state == "busy"]:
                w.kill()
                self._workers.remove(w)
                with contextlib.suppress(Exception):
                    self._spawn()
            raise
        return audio, failures

    def _run(self, n: np.ndarray, notes: list[tuple[Note, ...]], duration_s: float, audio: np.ndarray,
             progress: bool) -> list[RenderFailure]:
        pending: deque[int] = deque(range(n.shape[0]))
        reasons: dict[int, list[str]] = {}
        failures: list[RenderFailure] = []
        done = 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n.shape[0], desc=f"render {self.info.name}", unit="preset")
        faults = dict(self._faults)

        def fail(w: _Worker, i: int, reason: str) -> None:
            nonlocal done
            self._workers.remove(w)
            fresh = self._spawn()  # keep the pool at full size
            reasons.setdefault(i, []).append(reason)
            if len(reasons[i]) < 2:  # one retry, in that fresh worker
                fresh.reserved.append(i)
            else:
                failures.append(RenderFailure(i, reason, len(reasons[i]), tuple(reasons[i])))
                done += 1
                if bar is not None:
                    bar.update(1)

        try:
            while True:
                live = [w for w in self._workers if w.state != "dead"]
                # hand out work
                for w in live:
                    if w.state != "idle":
                        continue
                    i = w.reserved.popleft() if w.reserved else (pending.popleft() if pending else None)
                    if i is None:
                        continue
                    kind, times = faults.get(i, (None, 0))
                    fault = kind if times > 0 else None
                    if fault:
                        faults[i] = (kind, times - 1)
                    w.conn.send(((self._batch, i), n[i], notes[i], duration_s, fault))
                    # a hung render process is killed by its worker at timeout_s; the worker
                    # itself gets a grace period before the pool kills it
                    w.state, w.task, w.deadline = "busy", i, time.monotonic() + self.timeout_s + 2.0
                busy = [w for w in live if w.state == "busy"]
                starting = [w for w in live if w.state == "starting"]
                if not busy and not pending and not any(w.reserved for w in live):
                    break  # replacements still starting finish in the background
                deadlines = [w.deadline for w in busy] + [w.started + self.startup_timeout_s for w in starting]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                watch = busy + starting
                ready = _wait_connections([w.conn for w in watch] + [w.proc.sentinel for w in watch], timeout)
                now = time.monotonic()
                for w in watch:
                    if w.conn in ready:
                        try:
                            kind, task_id, payload = w.conn.recv()
                        except (EOFError, OSError):
                            w.proc.join(5)
                            self._lost(w, fail, f"worker crashed: {_signal_name(w.proc.exitcode)}")
                            continue
                        if w.state == "starting":
                            self._on_message(w, kind, payload)
                            continue
                        if task_id != (self._batch, w.task):  # never expected; be safe
                            w.kill()
                            fail(w, w.task, f"worker answered task {task_id}, expected {(self._batch, w.task)}")
                            continue
                        if kind == "ok":
                            audio[w.task] = payload
                            w.state, w.task = "idle", None
                            done += 1
                            if bar is not None:
                                bar.update(1)
                        else:  # the attempt failed (exception, or the render process died)
                            i = w.task
                            w.kill()
                            fail(w, i, payload)
                    elif w.proc.sentinel in ready:
                        w.proc.join(5)
                        self._lost(w, fail, f"worker crashed: {_signal_name(w.proc.exitcode)}")
                    elif w.state == "busy" and now >= w.deadline:
                        i = w.task
                        w.kill()
                        fail(w, i, f"timed out after {self.timeout_s + 2:g} s (worker killed)")  # hung worker
                    elif w.state == "starting" and now >= w.started + self.startup_timeout_s:
                        w.kill()
                        raise RuntimeError(f"a replacement render worker did not load {self.info.default_path} "
                                           f"within {self.startup_timeout_s:g} s")
        finally:
            if bar is not None:
                bar.close()
        return sorted(failures, key=lambda f: f.index)

    def _lost(self, w: _Worker, fail: Callable[[_Worker, int, str], None], reason: str) -> None:
        if w.state == "starting":
            code = w.proc.exitcode
            w.kill()
            raise RuntimeError(f"a replacement render worker died while loading {self.info.default_path}: "
                               f"{_signal_name(code)}")
        i = w.task
        w.kill()
        if i is not None:
            fail(w, i, reason)
        else:
            self._workers.remove(w)
            self._spawn()
