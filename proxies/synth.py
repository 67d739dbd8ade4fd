"""The synth contract: one seam that every synth enters through, and the registry of synths.

A synth is described once, as data plus functions (a frozen record of module-level functions,
as optax's ``GradientTransformation(init, update)``), never as a class hierarchy:

* :class:`Synth`: name, parameter spec, channels, how to open its real engine, its proxy (if
  any), its preset formats, sampling prior, note conventions and training defaults.
* :class:`Engine`: an opened real engine (a worker pool hosting a plugin through DawDreamer, or
  an in-process engine for thread-safe deterministic engines such as dexed-py).
* :class:`Proxy`: the differentiable JAX proxy as two functions: ``to_controls`` (calibration:
  normalized values -> the proxy's controls) and a pure ``render`` (controls, pitch, velocity ->
  audio). Pitch and velocity are traced arrays (one per sound): one compiled proxy serves every
  note.
* :class:`PresetFormats`: read / write preset files, the suffixes, the synth's human corpus.
* :class:`NoteConvention`: how the engine places the note-off, the notes it plays.

Above ``proxies/``, code reaches a synth only through :func:`get_synth`; it never names one.
The registry imports lazily: importing this module loads no plugin, no JAX and no engine; a
synth's package is imported on the first :func:`get_synth` of its name.

Render lengths and note-off samples are derived here and nowhere else
(:func:`render_samples`, :func:`note_off_sample`).
"""

from __future__ import annotations

import importlib
import math
import os
from typing import Any, Callable, Literal, Mapping, NamedTuple

import numpy as np

from proxies.params import SynthSpec

__all__ = [
    "Engine",
    "NoteConvention",
    "PresetFormats",
    "Proxy",
    "ProxyRender",
    "Synth",
    "SynthNotFoundError",
    "get_synth",
    "list_synths",
    "note_off_sample",
    "proxy_renderer",
    "register_synth",
    "render_samples",
]


# ------------------------------------------------------------------------------- time grid
def render_samples(duration_s: float, sample_rate: int) -> int:
    """Samples in a render of ``duration_s`` seconds: ``round(duration_s * sample_rate)``, >= 1.

    The one place this is derived: datasets, engines, proxies and the CLIs all call it.
    """
    return max(1, int(round(float(duration_s) * int(sample_rate))))


class NoteConvention(NamedTuple):
    """How a synth's engine plays a note, as data.

    Attributes:
        note_off_quantum: the engine applies the note-off at a multiple of this many samples
            (1: at the exact sample; dexed-py: 64, its block).
        note_off_rounding: ``"floor"`` (DawDreamer sends the note-off at ``int(hold_s * sr)``)
            or ``"ceil"`` (quantised up to the next block boundary).
        lowest, highest: MIDI notes the engine and proxy support.
        default_note, default_velocity: what a render plays when nothing is said.
    """

    note_off_quantum: int = 1
    note_off_rounding: Literal["floor", "ceil"] = "floor"
    lowest: int = 0
    highest: int = 127
    default_note: int = 60
    default_velocity: int = 100


def note_off_sample(hold_s: float, sample_rate: int, convention: NoteConvention = NoteConvention()) -> int:
    """The sample at which the engine releases a note held ``hold_s`` seconds from sample 0."""
    exact = int(math.floor(np.float64(hold_s) * int(sample_rate)))
    q = int(convention.note_off_quantum)
    if q <= 1:
        return exact
    if convention.note_off_rounding == "ceil":
        return -(-exact // q) * q
    return (exact // q) * q


# ---------------------------------------------------------------------------------- engines
class Engine(NamedTuple):
    """An opened real engine (what :attr:`Synth.open_engine` returns).

    Attributes:
        render: ``render(normalized [B, P], notes, duration_s, progress=False) -> (audio, failures)``
            with ``notes`` one tuple of :class:`proxies.notes.Note` for every preset, or a list of
            B such tuples (one per preset); audio float32 ``[B, channels, render_samples(...)]``,
            rows of failed presets NaN, failures a list of :class:`proxies.notes.RenderFailure`.
        reproducible: ``f(normalized [B, P]) -> bool [B]``: presets this engine renders identically
            every time (whatever came before, in whichever worker).
        close: release workers / instances (idempotent).
        channels: output channels.
        sample_rate: Hz.
        kind: ``"pool"`` (worker processes), ``"inprocess"`` (threads) or ``"ray"``.
    """

    render: Callable[..., tuple[np.ndarray, list]]
    reproducible: Callable[[np.ndarray], np.ndarray]
    close: Callable[[], None]
    channels: int
    sample_rate: int
    kind: str = "pool"


# ---------------------------------------------------------------------------------- proxies
class ProxyRender(NamedTuple):
    """Static render settings shared by every proxy (hashable: a static ``jax.jit`` argument).

    Pitch and velocity are not here: they are traced arrays, one per sound.
    """

    sample_rate: int = 44100
    duration_s: float = 1.5
    hold_s: float = 1.0

    @property
    def n_samples(self) -> int:
        return render_samples(self.duration_s, self.sample_rate)


class Proxy(NamedTuple):
    """A synth's differentiable JAX proxy: calibration and a pure render, as two functions.

    Attributes:
        to_controls: ``(normalized [B, P], probs) -> controls`` (a pytree). ``probs=None`` is
            exact mode (hard categorical choices, the engine's own snapping); a dict
            ``{name: [B, K]}`` of probabilities (names from ``relaxed``) is relaxed mode.
        render: ``(controls, pitch [B] int, velocity [B] int, config: ProxyRender, key) ->
            audio [B, channels, config.n_samples]``: pure, jit/vmap/grad-safe, ``config`` static.
        relaxed: ``{parameter name: K}``: the stepped parameters whose probabilities
            ``to_controls`` accepts in relaxed mode (categoricals and ordered steps).
        one_hot: ``(normalized [B, P]) -> {name: [B, K]}``: the exact-mode probabilities.
        from_controls: inverse of ``to_controls`` (controls -> normalized), or None.
    """

    to_controls: Callable[..., Any]
    render: Callable[..., Any]
    relaxed: Mapping[str, int]
    one_hot: Callable[[Any], dict]
    from_controls: Callable[[Any], Any] | None = None


def proxy_renderer(synth: "Synth", config: ProxyRender) -> Callable[..., Any]:
    """``f(normalized [B, P], pitch [B], velocity [B], probs=None, key=None) -> [B, C, T]``:
    calibration then the proxy render, for jitting (``config`` closed over as static)."""
    if synth.proxy is None:
        raise ProxyUnavailableError(synth.name)
    proxy = synth.proxy()

    def render_fn(normalized, pitch, velocity, probs=None, key=None):
        return proxy.render(proxy.to_controls(normalized, probs), pitch, velocity, config, key)

    return render_fn


class ProxyUnavailableError(RuntimeError):
    """A method needs a differentiable proxy and the synth has none (the message says what to use)."""

    def __init__(self, name: str):
        super().__init__(f"{name} has no differentiable proxy: methods that render through the proxy (spectral "
                         "loss, proxy refinement, proxy search) are not available for it; use the methods that "
                         "need none (parameter loss, nearest neighbour, CMA-ES through the real engine)")


# ---------------------------------------------------------------------------------- presets
class PresetFormats(NamedTuple):
    """A synth's preset files.

    Attributes:
        suffixes: file suffixes ``read`` understands (lower case, with the dot).
        read: ``(path, index | None) -> (name, normalized [P])``: one preset of a file (``index``
            picks one in a bank); raises :attr:`error` naming the file and the fix.
        read_all: ``(path) -> list[(name, normalized [P])]``: every preset of a file.
        write: ``(path, name, normalized [P]) -> list[str]``: writes the preset set for ``path``
            (its primary file and any companions, e.g. a ``.fxp`` or a single-voice sysex), each
            atomically; returns the paths written. ``read(path, 0)`` gives the preset back (a
            bank holds it in its first slot).
        write_suffix: the primary suffix ``write`` expects on ``path`` (e.g. ``.amSynth``).
        corpus: ``() -> (names, normalized [N, P])``: the synth's human-made presets (factory
            banks), or None when there are none.
        error: the exception type raised for a bad file.
    """

    suffixes: tuple[str, ...]
    read: Callable[[str, int | None], tuple[str, np.ndarray]]
    read_all: Callable[[str], list[tuple[str, np.ndarray]]]
    write: Callable[[str, str, np.ndarray], list[str]]
    write_suffix: str
    corpus: Callable[[], tuple[list[str], np.ndarray]] | None = None
    error: type = ValueError


# ------------------------------------------------------------------------------------ synth
def _always_reproducible(normalized: Any) -> np.ndarray:
    n = np.asarray(normalized)
    return np.ones(n.shape[:-1], dtype=bool)


class Synth(NamedTuple):
    """Everything the library knows about one synth, as data plus module-level functions.

    Attributes:
        name: registry name (``amsynth``, ``dexed``, ``vst:/path/Plugin.so``).
        spec: the parameter description (normalized <-> internal <-> control, prior, choices).
        channels: output channels of the real engine and the proxy (2 stereo, 1 mono).
        open_engine: ``(sample_rate, workers=2, **options) -> Engine``.
        presets: :class:`PresetFormats`.
        notes: :class:`NoteConvention`.
        proxy: ``() -> Proxy``: loads the proxy (imports JAX) on demand; None when the synth
            has no proxy.
        sample: ``(rng, n, frozen) -> normalized [n, P]``: the sampling prior (snapped).
        reproducible: ``(normalized [..., P]) -> bool [...]``: presets that render identically in
            any fresh engine (noise-free).
        spectral_params: parameters the spectral loss trains by default (``loss.spectral_params``).
        description: one line for humans.
        install_hint: how to install the real engine.
        plugin: the plugin and its determinism recipe (:class:`proxies.host.PluginInfo`) for
            synths hosted through DawDreamer; None for in-process engines.
        ablations: ``{stage: {parameter: value}}``: edits that remove one stage of the sound in
            the engine and the proxy alike (the fidelity report's diagnosis); a value
            ``("scale", k)`` multiplies the parameter instead of setting it.
        group_of: ``(normalized [N, P]) -> labels [N]``: how the fidelity report groups presets
            in its per-group rows (e.g. DX7 algorithm), or None.
    """

    name: str
    spec: SynthSpec
    channels: int
    open_engine: Callable[..., Engine]
    presets: PresetFormats
    notes: NoteConvention = NoteConvention()
    proxy: Callable[[], Proxy] | None = None
    sample: Callable[..., np.ndarray] | None = None
    reproducible: Callable[[Any], np.ndarray] = _always_reproducible
    spectral_params: tuple[str, ...] = ("all",)
    description: str = ""
    install_hint: str = ""
    plugin: Any = None
    ablations: Mapping[str, Mapping[str, Any]] = {}
    group_of: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def has_proxy(self) -> bool:
        return self.proxy is not None

    def sample_presets(self, rng: np.random.Generator, n: int, frozen: Mapping[str, float] | None = None) -> np.ndarray:
        """``n`` presets from the synth's prior, snapped normalized ``[n, P]`` (float64)."""
        if self.sample is not None:
            return np.asarray(self.sample(rng, n, dict(frozen or {})), dtype=np.float64)
        out = self.spec.sample_normalized(rng, n, frozen=dict(frozen or {}))
        return np.asarray(self.spec.snap_normalized(out), dtype=np.float64)


# --------------------------------------------------------------------------------- registry
class SynthNotFoundError(ValueError):
    """An unknown synth name (the message lists the registered ones and the ``vst:`` form)."""


#: name -> "module:attribute" of its :class:`Synth`, imported on first use.
_BUILTIN: dict[str, str] = {
    "amsynth": "proxies.amsynth.synth:SYNTH",
    "dexed": "proxies.dexed.synth:SYNTH",
    "nekobi": "proxies.vst:NEKOBI",
}
_LOADED: dict[str, Synth] = {}


def register_synth(synth: Synth, replace: bool = False) -> Synth:
    """Add a synth to the registry (an error if the name is taken, unless ``replace``)."""
    if not isinstance(synth, Synth):
        raise TypeError(f"register_synth expects a proxies.synth.Synth, got {type(synth).__name__}")
    if (synth.name in _LOADED or synth.name in _BUILTIN) and not replace:
        raise ValueError(f"a synth named {synth.name!r} is already registered; pass replace=True")
    _LOADED[synth.name] = synth
    return synth


def list_synths() -> tuple[str, ...]:
    """Registered synth names (builtin and registered at run time); ``vst:PATH`` works too."""
    return tuple(sorted(set(_BUILTIN) | set(_LOADED)))


def get_synth(name: str | Synth, spec_path: str | os.PathLike | None = None) -> Synth:
    """The :class:`Synth` called ``name``.

    ``name`` is a registered name, or ``vst:PATH`` for any VST2 ``.so`` / VST3 bundle that
    DawDreamer loads, described by a probed spec (``python -m proxies.probe PATH --out
    SPEC.json``): ``spec_path`` if given, else ``SPEC.json`` found next to the plugin or under
    ``~/.cache/synthprog/specs/``.
    """
    if isinstance(name, Synth):
        return name
    if not isinstance(name, str) or not name:
        raise SynthNotFoundError(f"synth must be a name such as 'amsynth' or 'vst:/path/Plugin.so', got {name!r}")
    if name.startswith("vst:"):
        from proxies.vst import vst_synth  # noqa: PLC0415

        return vst_synth(name[4:], spec_path)
    if name in _LOADED:
        return _LOADED[name]
    if name not in _BUILTIN:
        raise SynthNotFoundError(f"unknown synth {name!r}; expected one of: {', '.join(list_synths())}, or "
                                 "vst:/path/to/Plugin.so for a probed VST plugin")
    module, attr = _BUILTIN[name].split(":")
    synth = getattr(importlib.import_module(module), attr)
    _LOADED[name] = synth
    return synth
