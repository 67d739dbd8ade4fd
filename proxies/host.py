"""Real-plugin host: render presets through a VST plugin with DawDreamer, exactly and reproducibly.

Everything that reaches a real plugin goes through this module: the training data (renders of
sampled presets), the evaluation re-renders and the CLI (``python -m proxies.render``).

Public API
----------
* :class:`PluginInfo`, :func:`register_plugin`, :func:`get_plugin`, :func:`registered_plugins`:
  a registry of plugins by name. ``amsynth`` is registered (``/usr/lib/vst/amsynth_vst.so``,
  spec :data:`proxies.amsynth.spec.AMSYNTH`). A path to any VST2 ``.so`` / VST3 bundle that
  DawDreamer loads works too (no spec: parameters by index, the generic protocol below).
* :class:`Note`: one MIDI note (pitch, velocity, start, hold).
* :func:`render`, :func:`render_batch`: render in the current process (a plugin crash kills it).
* :class:`RenderPool`: worker processes, one engine each; a crash or hang costs one retry in a
  fresh worker, then a failure record for that preset, never the batch. On Linux it renders
  noise and sync presets in forked children, which makes *every* preset reproducible there.
* :func:`is_reproducible`: which presets render identically in-process whatever came before
  (amsynth: those without noise); :meth:`RenderPool.reproducible` for a pool.
* :class:`PluginHost`: one engine + plugin instance running the protocol (what the workers use).

Output: ``float32 [channels, samples]`` with exactly ``round(duration_s * sample_rate)`` samples
(DawDreamer itself truncates ``int(duration * sr)``, which loses a sample for e.g. 889/44100 s).

The determinism protocol (amsynth; measured, see ``shared/amsynth/README.md`` §3, §9.4, §10)
------------------------------------------------------------------------------------------
The README §10 protocol (warm-up render, ``load_graph``, kept render) leaves renders dependent on
what the same plugin instance rendered before: we measured max |diff| up to 0.47 between a preset
rendered fresh and the same preset rendered after another one. The causes, all in amsynth 1.13.2's
source, and what this module does about each:

1. **Smoothers stall history-dependently.** ``z += (x - z) * 0.005f`` (per-voice master volume,
   distortion crunch, reverb dry/wet) stops moving ~100 ulp short of its target, on the side it
   came from: a preset rendered after a louder one is 7e-6 away from the same preset rendered
   fresh. *Fix*: a **pre-roll** render with the notes held, ``master_vol = 0``, crunch at maximum
   and ``reverb_wet = 0`` drives every smoother far to one side, so the warm-up approaches each
   target from the same side and stalls at the same float.
2. **Frequency lerpers start from the previous block's target.** With LFO pitch modulation the
   oscillators' first block (and so the whole note's phase) depended on where the LFO was when
   the previous render stopped. *Fix*: the pre-roll runs with ``lfo_freq = 0``,
   ``freq_mod_amount = 0`` and ``portamento_time = 0``, so the warm-up starts from the plain note
   frequency and an LFO frequency of 0 whatever came before.
3. **The reverb's comb ``filterstore`` is never cleared** (``load_graph`` clears only the delay
   lines), and it leaks the previous render into the first ~100 samples of comb writes. *Fix*:
   after the warm-up, ``load_graph`` and a short **flush** render with ``reverb_damp = 0`` and no
   voice sounding: each comb's store then equals its (empty) delay line output, i.e. exactly 0.
4. **JUCE skips ``setParameter`` when the new value is within ~1 ulp of its cached one**, so the
   plugin would keep the old value. *Fix*: such near-equal values are sent after a far value.
5. **LFO polarity is sticky** (README §6.1): ``lfo_waveform`` is set to saw-down then saw-up
   (n = 1, 5/6) before the target values, so the triangle LFO always has polarity +1.
6. **The osc2 sync accumulator is never reset** (README §6.3): it runs on from one sync render to
   the next on the same voice, and no parameter can bring it back. *Fix*: a preset with sync
   active gets a **fresh plugin instance** whenever a voice it plays was already used by a sync
   render of the current instance (~0.1-0.3 s per such preset; :class:`RenderPool` forks
   instead, ~10-20 ms).

Per preset: ``prelude`` (5) -> values with pre-roll overrides -> pre-roll (4096 samples, notes
held) -> values with ``reverb_damp = 0`` -> warm-up (the real notes and duration) ->
``load_graph`` -> flush (512 samples, silent) -> target values -> ``load_graph`` -> kept render.
Measured (``tests/test_host.py`` and a wider check: 60 random presets with portamento and
keyboard modes, 40 factory presets, single notes, chords and staggered notes, 16 and 44.1 kHz):
renders are **bit-identical** whatever was rendered before and in whichever process. One known
residual: when every note sounds for less than ~2300 samples in all, the per-voice volume
smoother has not fully settled after the pre-roll (it left it at ~1e-9 of its old value), which
leaves differences of a few 1e-9. The protocol costs about 2x the CPU of one raw render
(``benchmarks/render.py``).

**Noise.** amsynth's oscillator noise / sample-and-hold and LFO noise / S&H draw from one
process-global LCG (seeded once when the ``.so`` is loaded) and S&H counters that persist in each
voice. Rendered in *this* process (:func:`render`), such presets are **not** reproducible: the
result depends on every noise sample drawn before in the process. :func:`is_reproducible` tells
callers which rows are (``~proxies.amsynth.spec.uses_noise``); compare those renders with
spectral or statistical measures, not sample by sample. :class:`RenderPool` in fork mode (Linux,
default) renders them in a forked child of a worker that never drew a noise sample, i.e. from
the load seed, so there they *are* reproducible and equal a fresh process's first render
(README §10: "fresh process with identical call history").

Plugins without a recipe (a bare path) get the README §10 protocol: set values by index, notes,
warm-up, ``load_graph``, kept render.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import multiprocessing as mp
import os
import signal
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as _wait_connections
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from proxies.amsynth.spec import AMSYNTH, uses_noise, uses_sync
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
    "register_plugin",
    "registered_plugins",
    "render",
    "render_batch",
]

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000  # amsynth's Freeverb asserts rate <= 192000 (aborts the process above)
BLOCK_SIZE = 512  # DawDreamer host buffer; amsynth's 64-sample control grid restarts at each one
_NEAR = 1e-4  # values this close to the cached one are re-sent via a far value (JUCE skips ~1 ulp)


# ------------------------------------------------------------------------------------ notes
@dataclass(frozen=True)
class Note:
    """One MIDI note.

    Attributes:
        pitch: MIDI note number, 0..127 (60 = middle C, 261.6 Hz).
        velocity: MIDI velocity, 1..127 (0 would be a note-off).
        start_s: note-on time (s) from the start of the render, >= 0.
        hold_s: time (s) until the note-off, > 0 (DawDreamer refuses empty notes). Notes still
            held when the render ends are cut (DawDreamer sends All-Notes-Off after every render).
    """

    pitch: int = 60
    velocity: int = 100
    start_s: float = 0.0
    hold_s: float = 1.0

    def __post_init__(self) -> None:
        for name, lo, hi in (("pitch", 0, 127), ("velocity", 1, 127)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"Note.{name} must be an integer in {lo}..{hi}, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("start_s", "hold_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"Note.{name} must be a number of seconds, got {v!r}")
            if not math.isfinite(v) or v < 0 or (name == "hold_s" and v == 0):
                rule = "> 0" if name == "hold_s" else ">= 0"
                raise ValueError(f"Note.{name} must be a finite time {rule} s, got {v!r}")
            object.__setattr__(self, name, float(v))


def _check_notes(notes: Note | Iterable[Note], duration_s: float) -> tuple[Note, ...]:
    out = (notes,) if isinstance(notes, Note) else tuple(notes)
    if not out:
        raise ValueError("notes is empty; give at least one Note (e.g. notes=(Note(60),))")
    for k, n in enumerate(out):
        if not isinstance(n, Note):
            raise ValueError(f"notes[{k}] is a {type(n).__name__}, expected proxies.host.Note")
        if n.start_s >= duration_s:
            raise ValueError(
                f"notes[{k}] starts at {n.start_s} s, at or after the end of the render "
                f"(duration_s={duration_s}); start it earlier or render longer"
            )
    return out


def check_sample_rate(sample_rate: Any) -> int:
    """The sample rate as an int; a clear error unless it is an integer in 8000..192000 Hz."""
    ok = isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool)
    if isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer():
        ok = True
    if not ok or not MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise ValueError(
            f"unsupported sample rate {sample_rate!r}: expected an integer number of Hz in "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} (e.g. 16000, 44100, 48000)"
        )
    return int(sample_rate)


def _check_duration(duration_s: Any) -> float:
    if isinstance(duration_s, bool) or not isinstance(duration_s, (int, float, np.integer, np.floating)):
        raise ValueError(f"duration_s must be a number of seconds, got {duration_s!r}")
    d = float(duration_s)
    if not math.isfinite(d) or d <= 0 or d > 600:
        raise ValueError(f"duration_s must be in (0, 600] s, got {duration_s!r}")
    return d


def n_samples(duration_s: float, sample_rate: int) -> int:
    """Samples in a render: ``round(duration_s * sample_rate)`` (at least 1)."""
    return max(1, int(round(float(duration_s) * int(sample_rate))))


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


_REGISTRY: dict[str, PluginInfo] = {}


def register_plugin(info: PluginInfo, replace: bool = False) -> PluginInfo:
    """Add a plugin to the registry (an error if the name is taken, unless ``replace``)."""
    if not isinstance(info, PluginInfo):
        raise TypeError(f"register_plugin expects a PluginInfo, got {type(info).__name__}")
    if info.name in _REGISTRY and not replace:
        raise ValueError(f"a plugin named {info.name!r} is already registered; pass replace=True")
    _REGISTRY[info.name] = info
    return info


def registered_plugins() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_plugin(plugin: str | os.PathLike | PluginInfo) -> PluginInfo:
    """A :class:`PluginInfo` from a registered name, a plugin path, or a PluginInfo itself.

    A path equal to a registered plugin's path gets that plugin's spec and recipe; any other
    path is a bare plugin (values by index, README §10 protocol).
    """
    if isinstance(plugin, PluginInfo):
        return plugin
    if not isinstance(plugin, (str, os.PathLike)):
        raise TypeError(f"plugin must be a registered name, a path or a PluginInfo, got {type(plugin).__name__}")
    key = os.fspath(plugin)
    if key in _REGISTRY:
        return _REGISTRY[key]
    looks_like_path = os.sep in key or key.endswith((".so", ".vst3", ".dll", ".vst", ".dylib"))
    if not looks_like_path:
        raise ValueError(
            f"unknown plugin {key!r}: expected a registered name ({', '.join(registered_plugins())}) "
            "or a path to a VST2 .so / VST3 bundle"
        )
    real = os.path.realpath(key)
    for info in _REGISTRY.values():
        if os.path.realpath(info.default_path) == real:
            return info
    stem = os.path.splitext(os.path.basename(key.rstrip(os.sep)))[0] or key
    return PluginInfo(stem, key)


# ---- amsynth's recipe (module-level functions: picklable for the workers)
_I = AMSYNTH.index_of


def _amsynth_fresh_voices(normalized: np.ndarray, notes: tuple[Note, ...]) -> frozenset[int]:
    if not bool(uses_sync(normalized)):
        return frozenset()
    mode = int(AMSYNTH.category_of(np.asarray(normalized))[_I("keyboard_mode")])
    # poly: one VoiceBoard per note number; mono / legato: always voice 0 (README §4)
    return frozenset(n.pitch for n in notes) if mode == 0 else frozenset({0})


def _amsynth_read_preset(path: str, index: int | None = None) -> tuple[str, np.ndarray]:
    from proxies.amsynth.presets import read_preset_file

    preset = read_preset_file(path, index)
    return preset.name, preset.normalized


AMSYNTH_PLUGIN = register_plugin(
    PluginInfo(
        name="amsynth",
        default_path="/usr/lib/vst/amsynth_vst.so",
        spec=AMSYNTH,
        install_hint="sudo apt-get install amsynth (or: bash scripts/setup.sh)",
        prelude=((_I("lfo_waveform"), 1.0), (_I("lfo_waveform"), 5.0 / 6.0)),
        preroll_overrides={
            _I("master_vol"): 0.0,  # volume smoothers -> 0: the warm-up approaches from below
            _I("distortion_crunch"): 1.0,  # crunch smoother -> its lowest target (from above)
            _I("reverb_wet"): 0.0,  # dry smoother -> 1, wet smoothers -> 0
            _I("reverb_damp"): 0.0,
            _I("lfo_freq"): 0.0,  # LFO frequency lerpers end at 0 Hz
            _I("freq_mod_amount"): 0.0,  # oscillator lerpers end at the plain note frequency
            _I("portamento_time"): 0.0,  # no glide: mono voice 0 ends at the note frequency
        },
        flush_overrides={_I("reverb_damp"): 0.0},  # comb filterstore := delay output = 0
        fresh_voices=_amsynth_fresh_voices,
        uses_noise=uses_noise,
        read_preset=_amsynth_read_preset,
    )
)


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
            with _captured_output() as output:
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
        duration_s = _check_duration(duration_s)
        notes = _check_notes(notes, duration_s)
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
        duration_s = _check_duration(duration_s)
        notes = _check_notes(notes, duration_s)
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
    duration_s = _check_duration(duration_s)
    notes = _check_notes(notes, duration_s)
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
    duration_s = _check_duration(duration_s)
    notes = _check_notes(notes, duration_s)
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


# ------------------------------------------------------------------------------ worker pool
@dataclass(frozen=True)
class RenderFailure:
    """A preset the pool could not render (its audio row is NaN).

    Attributes:
        index: row in the batch.
        reason: what happened on the last attempt (crash signal, timeout, exception).
        attempts: how many workers tried it (2: the first try and one retry in a fresh worker).
        reasons: the reason of every attempt, in order.
    """

    index: int
    reason: str
    attempts: int
    reasons: tuple[str, ...] = ()


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
        notes: Note | Iterable[Note] = (Note(),),
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
        duration_s = _check_duration(duration_s)
        notes = _check_notes(notes, duration_s)
        n = _precheck(self.info, np.asarray(normalized, dtype=np.float64), batch=True)
        if n.shape[1] != self._n_params:
            raise ValueError(f"normalized: expected {self._n_params} values per preset, got shape {n.shape}")
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

    def _run(self, n: np.ndarray, notes: tuple[Note, ...], duration_s: float, audio: np.ndarray,
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
                    w.conn.send(((self._batch, i), n[i], notes, duration_s, fault))
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
