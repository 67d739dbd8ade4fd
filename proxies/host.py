"""Real-plugin host: render presets through a VST plugin with DawDreamer, exactly and reproducibly.

Synth-agnostic: a plugin comes with a :class:`PluginInfo` (its path, parameter spec and the
*recipe* that makes its renders reproducible: prelude, pre-roll and flush overrides, voices
needing fresh instances, a noise predicate), which each synth package declares
(``proxies/amsynth/recipe.py``); a bare path is a plugin with the generic protocol.

Public API
----------
* :class:`PluginInfo`, :func:`get_plugin`: a plugin and its recipe, from a registered synth
  name (through :func:`proxies.synth.get_synth`), a path, or a PluginInfo.
* :class:`PluginHost`: one engine + plugin instance running the protocol (what workers use).
* :func:`render`, :func:`render_batch`: render in the current process (a plugin crash kills it).
* :func:`is_reproducible`: which presets render identically in-process whatever came before.
* :class:`proxies.pool.RenderPool` (also importable from here): worker processes, one engine
  each, with crash/hang retry; :func:`open_engine`: a pool as a :class:`proxies.synth.Engine`.

Output: ``float32 [channels, samples]`` with exactly ``render_samples(duration_s, sample_rate)``
samples (DawDreamer itself truncates ``int(duration * sr)``, which loses a sample for e.g.
889/44100 s).

The protocol, per preset: ``prelude`` -> values with pre-roll overrides -> pre-roll (notes
held) -> values with the flush overrides -> warm-up (the real notes and duration) ->
``load_graph`` -> flush (silent) -> target values -> ``load_graph`` -> kept render. Each step
is skipped when the recipe does not ask for it. Why each exists, measured on amsynth, is in
``proxies/amsynth/recipe.py``. JUCE skips ``setParameter`` when the new value is within ~1 ulp
of its cached one, so near-equal values are always sent after a far value.

Plugins without a recipe (a bare path) get the plain protocol: set values by index, notes,
warm-up, ``load_graph``, kept render.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from proxies.notes import (MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Note, RenderFailure, check_duration, check_notes,
                           check_sample_rate, n_samples)
from proxies.params import SynthSpec

__all__ = [
    "MAX_SAMPLE_RATE",
    "MIN_SAMPLE_RATE",
    "Note",
    "PluginHost",
    "PluginInfo",
    "PluginNotFoundError",
    "RenderFailure",
    "RenderPool",
    "check_sample_rate",
    "get_plugin",
    "is_reproducible",
    "n_samples",
    "open_engine",
    "render",
    "render_batch",
]

BLOCK_SIZE = 512  # DawDreamer host buffer (amsynth's 64-sample control grid restarts at each one)
_NEAR = 1e-4  # values this close to the cached one are re-sent via a far value (JUCE skips ~1 ulp)


# ---------------------------------------------------------------------------------- plugins
class PluginNotFoundError(FileNotFoundError):
    """The plugin file is missing (the message names the path and how to install it)."""


@dataclass(frozen=True)
class PluginInfo:
    """A plugin and the recipe that makes its renders reproducible.

    Callables must be module-level functions (they are pickled to the worker processes).

    Attributes:
        name: registry name (``amsynth``).
        default_path: the plugin file: a VST2 ``.so`` or a VST3 bundle.
        spec: its parameter description (index order); None for a bare plugin (then values are
            addressed by index and only range-checked).
        install_hint: the command that installs it (shown when the file is missing).
        prelude: ``(index, normalized)`` pairs set, in order, before each preset's values
            (amsynth: ``lfo_waveform`` 1 then 5/6, the LFO polarity fix).
        preroll_overrides: ``index -> normalized`` used during the pre-roll render that puts the
            hidden state in a canonical place; None skips the pre-roll.
        preroll_samples: length of the pre-roll render (samples, notes held throughout).
        flush_overrides: ``index -> normalized`` held through the warm-up and the silent flush
            render after it; None skips the flush.
        flush_samples: length of the flush render.
        fresh_voices: ``f(normalized [P], notes) -> set of voices`` whose hidden state cannot be
            reset (amsynth: the voices a sync preset plays). A preset gets a fresh plugin
            instance when one of them was already used that way by the current instance.
        uses_noise: ``f(normalized [..., P]) -> bool [...]``: renders depend on a process-global
            random generator (not reproducible). None: assumed reproducible.
        read_preset: ``f(path, index) -> (name, normalized [P])`` for preset files
            (``render(fxp=...)``, the CLI); ``index`` picks a preset in a bank (None: the only one).
        block_size: DawDreamer buffer size (fixed: it sets amsynth's control-block grid).
    """

    name: str
    default_path: str
    spec: SynthSpec | None = None
    install_hint: str = ""
    prelude: tuple[tuple[int, float], ...] = ()
    preroll_overrides: Mapping[int, float] | tuple[tuple[int, float], ...] | None = None
    preroll_samples: int = 4096
    flush_overrides: Mapping[int, float] | tuple[tuple[int, float], ...] | None = None
    flush_samples: int = 512
    fresh_voices: Callable[[np.ndarray, tuple[Note, ...]], frozenset[int]] | None = None
    uses_noise: Callable[[np.ndarray], np.ndarray] | None = None
    read_preset: Callable[[str, int | None], tuple[str, np.ndarray]] | None = None
    block_size: int = BLOCK_SIZE

    def __post_init__(self) -> None:
        # mappings stored as sorted (index, value) tuples: the info stays hashable and picklable
        for name in ("preroll_overrides", "flush_overrides"):
            v = getattr(self, name)
            if v is not None:
                pairs = v.items() if isinstance(v, Mapping) else v
                object.__setattr__(self, name, tuple(sorted((int(i), float(x)) for i, x in pairs)))
        object.__setattr__(self, "prelude", tuple((int(i), float(x)) for i, x in self.prelude))

    def at(self, path: str | os.PathLike) -> "PluginInfo":
        """The same plugin and recipe, loaded from another path."""
        return dataclasses.replace(self, default_path=os.fspath(path))

    def check_installed(self) -> str:
        """The plugin path; :class:`PluginNotFoundError` naming the path and the fix if missing."""
        path = self.default_path
        if not os.path.exists(path):
            fix = f"Install it: {self.install_hint}" if self.install_hint else "Check the path."
            raise PluginNotFoundError(f"{self.name} plugin not found at {path}. {fix}")
        return path


def get_plugin(plugin: str | os.PathLike | PluginInfo) -> PluginInfo:
    """A :class:`PluginInfo` from a registered synth name, a plugin path, or a PluginInfo itself.

    Names resolve through :func:`proxies.synth.get_synth` (its ``plugin`` field). A path equal to
    a registered synth's plugin path gets that synth's spec and recipe; any other path is a bare
    plugin (values by index, the plain protocol).
    """
    from proxies.synth import SynthNotFoundError, get_synth, list_synths  # noqa: PLC0415

    if isinstance(plugin, PluginInfo):
        return plugin
    if not isinstance(plugin, (str, os.PathLike)):
        raise TypeError(f"plugin must be a registered name, a path or a PluginInfo, got {type(plugin).__name__}")
    key = os.fspath(plugin)
    looks_like_path = os.sep in key or key.endswith((".so", ".vst3", ".dll", ".vst", ".dylib"))
    if not looks_like_path:
        try:
            synth = get_synth(key)
        except SynthNotFoundError:
            synth = None
        if synth is None or synth.plugin is None:
            hosted = [n for n in list_synths() if _hosted_plugin(n) is not None]
            raise ValueError(
                f"unknown plugin {key!r}: expected a synth hosted through DawDreamer ({', '.join(hosted)}) "
                "or a path to a VST2 .so / VST3 bundle"
            )
        return synth.plugin
    real = os.path.realpath(key)
    for name in list_synths():
        info = _hosted_plugin(name)
        if info is not None and os.path.realpath(info.default_path) == real:
            return info
    stem = os.path.splitext(os.path.basename(key.rstrip(os.sep)))[0] or key
    return PluginInfo(stem, key)


def _hosted_plugin(name: str) -> PluginInfo | None:
    from proxies.synth import get_synth  # noqa: PLC0415

    try:
        return get_synth(name).plugin
    except Exception:  # noqa: BLE001 - a synth whose package cannot load is simply not a match
        return None


def is_reproducible(plugin: str | os.PathLike | PluginInfo, normalized: Any) -> np.ndarray:
    """Bool ``[...]``: rows whose render is identical in every process and after any history.

    amsynth: False for presets with an oscillator or LFO noise / sample-and-hold waveform (a
    process-global random generator). Plugins without a ``uses_noise`` predicate: all True.
    """
    info = get_plugin(plugin)
    n = np.asarray(normalized, dtype=np.float64)
    if info.uses_noise is None:
        return np.ones(n.shape[:-1], dtype=bool)
    return ~np.asarray(info.uses_noise(n), dtype=bool)


# ------------------------------------------------------------------------------ the host
@contextlib.contextmanager
def preserve_fp_env():
    """Restore this thread's floating-point environment (x86 MXCSR, with its flush-to-zero and
    denormals-are-zero bits) when the block ends.

    Loading some plugins changes it for good: the first load of DPF's Nekobi in a process sets
    FTZ/DAZ, after which NumPy in that thread flushes denormals (``np.spacing(np.float32(0))``
    becomes 0). Plugin code run in this process is wrapped in this; a no-op where ``fegetenv``
    is unavailable.
    """
    import ctypes  # noqa: PLC0415
    import ctypes.util  # noqa: PLC0415

    env = None
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        buf = ctypes.create_string_buffer(256)  # fenv_t: 32 bytes on x86-64 glibc, 8 on aarch64
        if libm.fegetenv(buf) == 0:
            env = buf
    except (OSError, AttributeError):
        pass
    try:
        yield
    finally:
        if env is not None:
            libm.fesetenv(env)



@contextlib.contextmanager
def _captured_output():
    """Capture C-level stdout/stderr (DawDreamer and amsynth print on every plugin load).

    Yields a function returning what was printed, for error messages.
    """
    import sys
    import tempfile

    libc = ctypes.CDLL(None)
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as log:
        try:
            for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
                try:
                    stream.flush()
                    saved.append((fd, os.dup(fd)))
                    os.dup2(log.fileno(), fd)
                except (OSError, ValueError, AttributeError):
                    pass
            yield lambda: (libc.fflush(None), log.seek(0), log.read().decode("utf-8", "replace"))[2]
        finally:
            libc.fflush(None)
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


class PluginHost:
    """One DawDreamer engine and plugin instance running the determinism protocol.

    Not thread-safe (use one per thread, or the module's :func:`render` which locks).

    Args:
        plugin: registered name, path or :class:`PluginInfo`.
        sample_rate: Hz, integer in 8000..192000.
        canonicalize: run the pre-roll / flush steps of the recipe (default True). False gives
            the plain README §10 protocol; kept for diagnostics and tests.
        fresh_sync_instances: give presets whose hidden state cannot be reset (amsynth sync) a
            fresh plugin instance when needed (default True; False for diagnostics and tests).
    """

    def __init__(
        self,
        plugin: str | os.PathLike | PluginInfo = "amsynth",
        sample_rate: int = 44100,
        *,
        canonicalize: bool = True,
        fresh_sync_instances: bool = True,
    ) -> None:
        self.info = get_plugin(plugin)
        self.sample_rate = check_sample_rate(sample_rate)
        self.path = self.info.check_installed()
        self.canonicalize = bool(canonicalize)
        self.fresh_sync_instances = bool(fresh_sync_instances)
        import dawdreamer  # noqa: PLC0415  (heavy; only where a plugin is hosted)

        self._engine = dawdreamer.RenderEngine(self.sample_rate, self.info.block_size)
        self._instances_made = 0
        self._synth = None
        self._new_instance()

    # ---------------------------------------------------------------- instance management
    @property
    def n_params(self) -> int:
        return self._n_params

    @property
    def n_outputs(self) -> int:
        return self._n_outputs

    @property
    def instances_made(self) -> int:
        """Plugin instances created so far (1 + the fresh ones given to sync presets)."""
        return self._instances_made

    def _new_instance(self) -> None:
        if self._synth is not None:
            self._engine.remove_processor(self._synth_name)
            self._synth = None
        self._synth_name = f"{self.info.name}_{self._instances_made}"
        printed = ""
        try:
            with preserve_fp_env(), _captured_output() as output:  # some plugins set FTZ/DAZ on load
                try:
                    synth = self._engine.make_plugin_processor(self._synth_name, self.path)
                finally:
                    printed = output()
        except Exception as e:  # DawDreamer raises RuntimeError("Unable to load plugin.")
            said = " ".join(printed.split())[-500:]
            raise RuntimeError(
                f"DawDreamer could not load {self.path!r} as a plugin ({e}"
                f"{'; it printed: ' + said if said else ''}); expected a VST2 .so or a VST3 bundle "
                "built for this machine"
            ) from None
        self._instances_made += 1
        self._synth = synth
        n = int(synth.get_plugin_parameter_size())
        if self.info.spec is not None and n != self.info.spec.n_params:
            raise RuntimeError(
                f"{self.path} reports {n} parameters but the {self.info.name} spec declares "
                f"{self.info.spec.n_params}; is it the version the spec describes?"
            )
        self._n_params = n
        self._n_outputs = int(synth.get_num_output_channels())
        # what the host caches (JUCE skips a set within ~1 ulp of it): our mirror of it
        self._sent = np.array([synth.get_parameter(i) for i in range(n)], dtype=np.float32)
        self._dirty_voices: set[int] = set()
        self._engine.load_graph([(synth, [])])

    # ---------------------------------------------------------------------------- values
    def check_normalized(self, normalized: Any, source: str = "normalized") -> np.ndarray:
        """Validate one preset ``[P]`` (finite, in [0, 1], right length); float64 copy."""
        n = np.asarray(normalized, dtype=np.float64)
        if n.ndim != 1 or n.shape[0] != self._n_params:
            raise ValueError(
                f"{source}: expected {self._n_params} normalized values for {self.info.name}, got shape {n.shape}"
            )
        if self.info.spec is not None:
            return self.info.spec.check_normalized(n, source)
        return _check_unit_interval(n, source)

    def _send(self, index: int, value: float) -> None:
        v = np.float32(value)
        cur = self._sent[index]
        if v == cur:
            return  # the plugin holds exactly this value already
        if abs(float(v) - float(cur)) <= _NEAR:  # JUCE would skip it: go via a far value
            self._synth.set_parameter(index, 0.0 if v >= 0.5 else 1.0)
        self._synth.set_parameter(index, float(v))
        self._sent[index] = v

    def _apply(self, values: np.ndarray, overrides: Mapping[int, float] | None = None,
               prelude: bool = False) -> None:
        if prelude:
            for i, v in self.info.prelude:
                self._send(i, v)
        for i in range(self._n_params):
            self._send(i, overrides[i] if overrides and i in overrides else values[i])

    # ----------------------------------------------------------------------------- render
    def _render_samples(self, n: int) -> None:
        # DawDreamer renders int(T * sr) samples: ask for n + 0.5 to get exactly n
        self._engine.render((n + 0.5) / self.sample_rate)

    def _set_notes(self, notes: Sequence[Note]) -> None:
        self._synth.clear_midi()
        for nt in notes:
            self._synth.add_midi_note(nt.pitch, nt.velocity, nt.start_s, nt.hold_s)

    def render(self, normalized: Any, notes: Note | Iterable[Note] = (Note(),),
               duration_s: float = 1.5) -> np.ndarray:
        """Render one preset with the protocol. Returns float32 ``[channels, round(duration_s*sr)]``."""
        n = self.check_normalized(normalized)
        duration_s = check_duration(duration_s)
        notes = check_notes(notes, duration_s)
        return self._render_checked(n, notes, duration_s)

    def _render_checked(self, n: np.ndarray, notes: tuple[Note, ...], duration_s: float) -> np.ndarray:
        info = self.info
        total = n_samples(duration_s, self.sample_rate)
        if self.fresh_sync_instances and info.fresh_voices is not None:
            voices = info.fresh_voices(n, notes)
            if voices & self._dirty_voices:
                self._new_instance()
            self._dirty_voices |= voices
        preroll = dict(info.preroll_overrides) if self.canonicalize and info.preroll_overrides else None
        flush = dict(info.flush_overrides) if self.canonicalize and info.flush_overrides else None
        values = n.astype(np.float32)
        # 1. pre-roll: the notes held, overrides pushing every smoother/lerper to one side
        if preroll is not None:
            self._apply(values, preroll, prelude=True)
            held: dict[int, int] = {}
            for nt in notes:
                held.setdefault(nt.pitch, nt.velocity)
            hold_s = info.preroll_samples / self.sample_rate + 1.0
            self._set_notes([Note(p, v, 0.0, hold_s) for p, v in held.items()])
            self._render_samples(info.preroll_samples)
        self._apply(values, flush, prelude=preroll is None)
        # 2. warm-up with the real notes: smoothers converge, lerpers reach their targets
        self._set_notes(notes)
        self._render_samples(total)
        # 3. flush: clear delay lines, then run silent with the flush overrides (comb stores -> 0)
        self._engine.load_graph([(self._synth, [])])
        if flush is not None:
            self._synth.clear_midi()
            self._render_samples(info.flush_samples)
            self._apply(values)
            self._engine.load_graph([(self._synth, [])])
        # 4. the kept render
        self._set_notes(notes)
        self._render_samples(total)
        audio = np.asarray(self._engine.get_audio(), dtype=np.float32)
        if audio.shape[-1] != total:  # never seen; guards a DawDreamer rounding change
            raise RuntimeError(f"DawDreamer returned {audio.shape[-1]} samples, expected {total}")
        return np.ascontiguousarray(audio)

    def render_raw(self, normalized: Any, notes: Note | Iterable[Note] = (Note(),),
                   duration_s: float = 1.5) -> np.ndarray:
        """One render with no protocol (set values, notes, render): history-dependent.
        For benchmarks and diagnostics only."""
        n = self.check_normalized(normalized)
        duration_s = check_duration(duration_s)
        notes = check_notes(notes, duration_s)
        self._apply(n.astype(np.float32))
        self._set_notes(notes)
        self._render_samples(n_samples(duration_s, self.sample_rate))
        return np.asarray(self._engine.get_audio(), dtype=np.float32)


def _check_unit_interval(n: np.ndarray, source: str) -> np.ndarray:
    bad = ~np.isfinite(n)
    if bad.any():
        raise ValueError(f"{source}: parameter {int(np.argwhere(bad)[0][-1])} is not finite (NaN or inf)")
    out = (n < 0) | (n > 1)
    if out.any():
        i = np.argwhere(out)[0]
        raise ValueError(f"{source}: parameter {int(i[-1])} normalized value {n[tuple(i)]!r} is outside [0, 1]")
    return n


# ------------------------------------------------------------------ in-process rendering
_HOSTS: dict[tuple[PluginInfo, int], PluginHost] = {}
_HOSTS_LOCK = threading.Lock()
_HOST_LOCKS: dict[tuple[PluginInfo, int], threading.Lock] = {}


def _host(info: PluginInfo, sample_rate: int) -> tuple[PluginHost, threading.Lock]:
    key = (info, sample_rate)
    with _HOSTS_LOCK:
        if key not in _HOSTS:
            _HOSTS[key] = PluginHost(info, sample_rate)
            _HOST_LOCKS[key] = threading.Lock()
        return _HOSTS[key], _HOST_LOCKS[key]


def _resolve_values(info: PluginInfo, normalized: Any, internal: Any, fxp: Any) -> np.ndarray:
    given = [k for k, v in (("normalized", normalized), ("internal", internal), ("fxp", fxp)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of normalized=, internal= or fxp= (got {given or 'none'})")
    if internal is not None:
        if info.spec is None:
            raise ValueError(f"internal= needs a parameter spec; {info.name} has none: pass normalized=")
        v = np.asarray(internal, dtype=np.float64)
        if v.ndim == 0 or v.shape[-1] != info.spec.n_params:
            raise ValueError(f"internal: expected {info.spec.n_params} values for {info.name}, got shape {v.shape}")
        v = info.spec.check_internal(v, "internal")
        return np.clip(info.spec.internal_to_normalized(v.astype(np.float32)).astype(np.float64), 0.0, 1.0)
    if fxp is not None:
        if info.read_preset is None:
            raise ValueError(f"fxp= needs a preset reader; {info.name} has none: pass normalized=")
        return np.asarray(info.read_preset(os.fspath(fxp), None)[1], dtype=np.float64)
    return np.asarray(normalized, dtype=np.float64)


def _precheck(info: PluginInfo, n: np.ndarray, batch: bool) -> np.ndarray:
    """Validation that needs no plugin (the spec knows the parameter count)."""
    want = 2 if batch else 1
    if n.ndim != want:
        shape = "[batch, n_params]" if batch else "[n_params]"
        raise ValueError(f"normalized: expected shape {shape}, got {n.shape}")
    if info.spec is not None:
        if n.shape[-1] != info.spec.n_params:
            raise ValueError(
                f"normalized: expected {info.spec.n_params} values per preset for {info.name}, got shape {n.shape}"
            )
        return info.spec.check_normalized(n, "normalized")
    return _check_unit_interval(n, "normalized")


def render(
    plugin: str | os.PathLike | PluginInfo = "amsynth",
    normalized: Any = None,
    *,
    internal: Any = None,
    fxp: str | os.PathLike | None = None,
    notes: Note | Iterable[Note] = (Note(),),
    duration_s: float = 1.5,
    sample_rate: int = 44100,
) -> np.ndarray:
    """Render one preset through the real plugin in this process (deterministic protocol).

    Args:
        plugin: registered name (``"amsynth"``), plugin path, or :class:`PluginInfo`.
        normalized: ``[P]`` values in [0, 1] (plugin index order); or
        internal: ``[P]`` internal values (needs a spec); or
        fxp: a preset file the plugin's reader understands (amsynth: .fxp, preset text, or a
            single-preset bank).
        notes: one :class:`Note` or several.
        duration_s: render length (s); notes must start before it.
        sample_rate: Hz, an integer in 8000..192000.

    Returns:
        float32 ``[channels, round(duration_s * sample_rate)]`` (stereo for amsynth).

    Inputs are validated before the plugin is touched. A crash of the plugin ends this process:
    use :class:`RenderPool` where that matters. Engines are cached per (plugin, sample rate).
    """
    info = get_plugin(plugin)
    sample_rate = check_sample_rate(sample_rate)
    duration_s = check_duration(duration_s)
    notes = check_notes(notes, duration_s)
    n = _precheck(info, _resolve_values(info, normalized, internal, fxp), batch=False)
    info.check_installed()
    host, lock = _host(info, sample_rate)
    n = host.check_normalized(n)
    with lock:
        return host._render_checked(n, notes, duration_s)


def render_batch(
    plugin: str | os.PathLike | PluginInfo = "amsynth",
    normalized: Any = None,
    *,
    notes: Note | Iterable[Note] = (Note(),),
    duration_s: float = 1.5,
    sample_rate: int = 44100,
    progress: bool = False,
) -> np.ndarray:
    """Render ``normalized [B, P]`` in this process, in order. Returns float32 ``[B, C, T]``."""
    info = get_plugin(plugin)
    sample_rate = check_sample_rate(sample_rate)
    duration_s = check_duration(duration_s)
    notes = check_notes(notes, duration_s)
    n = _precheck(info, np.asarray(normalized, dtype=np.float64), batch=True)
    info.check_installed()
    host, lock = _host(info, sample_rate)
    if n.shape[1] != host.n_params:
        host.check_normalized(n[0])
    out = np.empty((n.shape[0], host.n_outputs, n_samples(duration_s, sample_rate)), dtype=np.float32)
    rows = range(n.shape[0])
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc=f"render {info.name}", unit="preset")
    with lock:
        for b in rows:
            out[b] = host._render_checked(n[b], notes, duration_s)
    return out




# ------------------------------------------------------------------------------------ engine
def open_engine(plugin: str | os.PathLike | PluginInfo, sample_rate: int, workers: int = 2, **options: Any):
    """A :class:`proxies.pool.RenderPool` of ``plugin`` as a :class:`proxies.synth.Engine`.

    ``options`` go to the pool (``timeout_s``, ``fork``, ``progress``, ...).
    """
    from proxies.pool import RenderPool  # noqa: PLC0415
    from proxies.synth import Engine  # noqa: PLC0415

    pool = RenderPool(plugin, workers=workers, sample_rate=sample_rate, **options)

    def render(normalized: Any, notes: Any, duration_s: float, progress: bool = False):
        return pool.render_batch(normalized, notes, duration_s, progress=progress)

    return Engine(render=render, reproducible=pool.reproducible, close=pool.close, channels=pool.n_outputs,
                  sample_rate=pool.sample_rate, kind="pool")


def __getattr__(name: str) -> Any:
    if name == "RenderPool":  # lives in proxies.pool (which imports this module)
        from proxies.pool import RenderPool  # noqa: PLC0415

        return RenderPool
    raise AttributeError(f"module 'proxies.host' has no attribute {name!r}")
