"""Any VST plugin behind the synth seam, from a probed parameter spec (JSON).

``vst_synth(path, spec_path)`` builds a :class:`proxies.synth.Synth` for a VST2 ``.so`` or a VST3
bundle that DawDreamer loads, from the JSON that ``python -m proxies.probe PATH --out SPEC.json``
writes (the format is documented in :mod:`proxies.probe`; users may edit it). It does no plugin
I/O: the plugin is loaded when the engine opens (``synth.open_engine(sample_rate, workers)``).

* Parameters: ``continuous`` -> internal value = normalized value in [0, 1] (linear law);
  ``categorical`` -> a stepped parameter with its choices (choice ``j`` of ``k`` at normalized
  ``j / (k - 1)``); ``fixed`` -> continuous with the ``fixed`` prior at its default. ``"prior":
  "fixed"`` holds any parameter at its default in random presets (and out of learning).
* Engine: :func:`proxies.host.open_engine` with the generic protocol (a :class:`PluginInfo` with
  no recipe). Presets: VST2 ``FxCk`` ``.fxp`` files (:mod:`proxies.fxp`) with the plugin's ID.
* Reproducibility: from the spec's ``"reproducible"`` (measured by the probe). A plugin that
  carries state from one render to the next but renders identically from a fresh instance has
  ``"fresh_instance": true``: its :class:`PluginInfo` then asks for a fresh instance per preset
  (``fresh_voices``; a fork-mode render pool forks a pristine instance instead). A plugin whose
  renders are not reproducible gets every row ``False`` from ``Synth.reproducible`` and a
  ``uses_noise`` predicate that is always true, so a fork-mode render pool renders each preset in
  a forked child of a worker that never rendered (which makes plugins drawing from a
  process-global random generator seeded at load reproducible there).

Builtin: ``NEKOBI`` (DPF Nekobi, a TB-303-like mono synth, ``/usr/lib/vst/Nekobi-vst.so``,
Debian ``dpf-plugins-vst``) from the reviewed spec ``proxies/vst_specs/nekobi.json``; built on
first access (``get_synth("nekobi")``).

Spec lookup for ``vst_synth(path)`` (and ``get_synth("vst:PATH")``): ``spec_path`` if given, else
``<path without suffix>.json`` next to the plugin, else ``~/.cache/synthprog/specs/<stem>.json``.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
from typing import Any, Mapping, NamedTuple

import numpy as np

from proxies.fxp import FxpError, plugin_id_bytes, read_fxck, write_fxck
from proxies.params import ParamSpec, SynthSpec

__all__ = [
    "NEKOBI_PATH",
    "NEKOBI_SPEC",
    "PARAM_KEYS",
    "SPEC_FORMAT",
    "SpecError",
    "TOP_KEYS",
    "VstSpec",
    "find_spec",
    "fresh_voice",
    "load_spec",
    "parse_spec",
    "spec_cache_dir",
    "vst_synth",
]

SPEC_FORMAT = 1
NEKOBI_PATH = "/usr/lib/vst/Nekobi-vst.so"
NEKOBI_SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vst_specs", "nekobi.json")

#: top-level keys of a spec: required ones map to True.
TOP_KEYS: dict[str, bool] = {
    "format": False, "name": False, "plugin": False, "plugin_id": False, "channels": True,
    "n_params": False, "sample_rate": False, "reproducible": True, "fresh_instance": False, "reproducibility": False,
    "notes": False, "parameters": True,
}
#: keys of one parameter object: required ones map to True.
PARAM_KEYS: dict[str, bool] = {
    "name": True, "index": True, "kind": True, "choices": False, "unit": False,
    "default_normalized": True, "display_min": False, "display_max": False, "prior": True,
    "display": False, "description": False,
}
KINDS = ("continuous", "categorical", "fixed")
PRIORS = ("uniform", "fixed")


class SpecError(ValueError):
    """A missing or malformed spec JSON: the message names the file, the key and the fix."""


class VstSpec(NamedTuple):
    """A parsed spec file.

    Attributes:
        spec: the parameter description (:class:`proxies.params.SynthSpec`).
        channels: output channels.
        plugin_id: the 4-character VST2 ID (``""``: unknown; FxCk files then carry four NULs
            and the ID is not checked on reading).
        reproducible: the probe's verdict.
        fresh_instance: renders are reproducible only from a fresh plugin instance per preset.
        max_diff: the largest sample difference the probe measured (0 when reproducible), or None.
        path: the spec file.
        plugin: the plugin path recorded in the spec (informational).
    """

    spec: SynthSpec
    channels: int
    plugin_id: str
    reproducible: bool
    fresh_instance: bool
    max_diff: float | None
    path: str
    plugin: str


# --------------------------------------------------------------------------------- parsing
def _unknown_key(source: str, where: str, key: str, known: Mapping[str, bool]) -> SpecError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return SpecError(f"{source}: {where}: unknown key {key!r}{hint} (known keys: {', '.join(known)}); "
                     "fix or remove it (re-probe with python -m proxies.probe to start again)")


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _want(source: str, key: str, v: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise SpecError(f"{source}: {key}: expected {expected}, got {_type_name(v)} {json.dumps(v)[:60]}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _parse_param(source: str, k: int, p: Any, n_total: int) -> ParamSpec:
    where = f"parameters[{k}]"
    _want(source, where, p, isinstance(p, dict), "an object with the keys " + ", ".join(PARAM_KEYS))
    for key in p:
        if key not in PARAM_KEYS:
            raise _unknown_key(source, where, key, PARAM_KEYS)
    for key, required in PARAM_KEYS.items():
        if required and key not in p:
            raise SpecError(f"{source}: {where}: missing key {key!r}; every parameter needs "
                            + ", ".join(x for x, r in PARAM_KEYS.items() if r))
    name, index, kind, prior = p["name"], p["index"], p["kind"], p["prior"]
    _want(source, f"{where}.name", name, isinstance(name, str) and name.strip() != "", "a non-empty string")
    where = f"parameters[{k}] ({name!r})"
    _want(source, f"{where}.index", index, isinstance(index, int) and not isinstance(index, bool), "an integer")
    if index != k:
        raise SpecError(f"{source}: {where}.index: {index}, but it is entry {k} of 'parameters'; list the "
                        f"parameters in plugin index order 0..{n_total - 1}, each with its index")
    _want(source, f"{where}.kind", kind, kind in KINDS, "one of " + ", ".join(map(repr, KINDS)))
    _want(source, f"{where}.prior", prior, prior in PRIORS, "one of " + ", ".join(map(repr, PRIORS)))
    if kind == "fixed" and prior != "fixed":
        raise SpecError(f"{source}: {where}.prior: a parameter of kind 'fixed' needs prior 'fixed'; make it "
                        "'continuous' (or 'categorical') to sample it")
    default = p["default_normalized"]
    _want(source, f"{where}.default_normalized", default, _is_num(default) and 0 <= default <= 1,
          "a number in [0, 1] (the normalized value the plugin reports after loading)")
    unit = p.get("unit", "")
    _want(source, f"{where}.unit", unit, isinstance(unit, str), "a string (\"\" for none)")
    for key in ("display_min", "display_max"):
        v = p.get(key)
        _want(source, f"{where}.{key}", v, v is None or _is_num(v), "a number or null")
    display = p.get("display", [])
    _want(source, f"{where}.display", display, isinstance(display, list) and all(
        isinstance(d, list) and len(d) == 2 and _is_num(d[0]) and isinstance(d[1], str) for d in display),
        "a list of [normalized, text] pairs")
    description = p.get("description", "")
    _want(source, f"{where}.description", description, isinstance(description, str), "a string")
    choices = p.get("choices")
    if kind != "categorical":
        if choices not in (None, []):
            raise SpecError(f"{source}: {where}.choices: only a 'categorical' parameter has choices (kind is "
                            f"{kind!r}); remove 'choices' or make the kind 'categorical'")
        lo, hi = p.get("display_min"), p.get("display_max")
        text = f"display {lo:g}..{hi:g}{' ' + unit if unit else ''}" if lo is not None and hi is not None else ""
        return ParamSpec(name=name, index=index, minimum=0.0, maximum=1.0, step=0.0, unit=unit,
                         default=float(default), prior="fixed" if kind == "fixed" else prior,
                         description=description or text)
    _want(source, f"{where}.choices", choices, isinstance(choices, list) and len(choices) >= 2,
          "a list of at least 2 {\"name\": ..., \"normalized\": ...} objects (categorical)")
    n_choices = len(choices)
    names = []
    for j, c in enumerate(choices):
        cw = f"{where}.choices[{j}]"
        _want(source, cw, c, isinstance(c, dict), "an object {\"name\": ..., \"normalized\": ...}")
        for key in c:
            if key not in ("name", "normalized"):
                raise _unknown_key(source, cw, key, {"name": True, "normalized": True})
        cname = c.get("name")
        _want(source, f"{cw}.name", cname, isinstance(cname, str) and cname != "", "a non-empty string")
        grid = j / (n_choices - 1)
        v = c.get("normalized", grid)
        _want(source, f"{cw}.normalized", v, _is_num(v), "a number")
        if abs(v - grid) > 1e-6:
            raise SpecError(f"{source}: {cw}.normalized: {v!r}, but choice {j} of {n_choices} sits at "
                            f"{j}/{n_choices - 1} = {grid:.9g}; choices are equally spaced over [0, 1] in "
                            "order (re-probe if the plugin's own grid differs)")
        if cname in names:
            raise SpecError(f"{source}: {cw}.name: {cname!r} appears twice; choice names must be unique")
        names.append(cname)
    step_default = min(max(_round_half_away(float(default) * (n_choices - 1)), 0), n_choices - 1)
    return ParamSpec(name=name, index=index, minimum=0.0, maximum=float(n_choices - 1), step=1.0, unit=unit,
                     default=float(step_default), choices=tuple(names), prior=prior,
                     description=description or f"{n_choices} choices: {', '.join(names)}")


def parse_spec(data: Any, source: str = "<spec>") -> VstSpec:
    """Validate a spec (the parsed JSON object); :class:`SpecError` naming the key on any problem."""
    _want(source, "the file", data, isinstance(data, dict), "a JSON object (see python -m proxies.probe --help)")
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown_key(source, "top level", key, TOP_KEYS)
    for key, required in TOP_KEYS.items():
        if required and key not in data:
            raise SpecError(f"{source}: missing key {key!r} (required: "
                            + ", ".join(x for x, r in TOP_KEYS.items() if r) + ")")
    fmt = data.get("format", SPEC_FORMAT)
    if fmt != SPEC_FORMAT:
        raise SpecError(f"{source}: format: {fmt!r}, this version reads format {SPEC_FORMAT}; re-probe the plugin")
    name = data.get("name", "")
    _want(source, "name", name, isinstance(name, str), "a string")
    plugin = data.get("plugin", "")
    _want(source, "plugin", plugin, isinstance(plugin, str), "a string (the plugin path)")
    plugin_id = data.get("plugin_id", "")
    _want(source, "plugin_id", plugin_id, isinstance(plugin_id, str) and len(plugin_id) in (0, 4),
          "a 4-character VST2 ID such as \"DNek\", or \"\" when unknown")
    channels = data["channels"]
    _want(source, "channels", channels, isinstance(channels, int) and not isinstance(channels, bool)
          and channels >= 1, "an integer >= 1 (output channels)")
    reproducible = data["reproducible"]
    _want(source, "reproducible", reproducible, isinstance(reproducible, bool), "true or false")
    fresh = data.get("fresh_instance", False)
    _want(source, "fresh_instance", fresh, isinstance(fresh, bool), "true or false")
    rep = data.get("reproducibility", {})
    _want(source, "reproducibility", rep, isinstance(rep, dict), "an object (the probe's measurements)")
    notes = data.get("notes", [])
    _want(source, "notes", notes, isinstance(notes, str) or (isinstance(notes, list) and all(
        isinstance(x, str) for x in notes)), "a string or a list of strings")
    sr = data.get("sample_rate", 44100)
    _want(source, "sample_rate", sr, isinstance(sr, int) and not isinstance(sr, bool), "an integer (Hz)")
    params = data["parameters"]
    _want(source, "parameters", params, isinstance(params, list) and len(params) >= 1,
          "a non-empty list of parameter objects")
    if "n_params" in data:
        n = data["n_params"]
        _want(source, "n_params", n, isinstance(n, int) and not isinstance(n, bool), "an integer")
        if n != len(params):
            raise SpecError(f"{source}: n_params: {n}, but 'parameters' lists {len(params)}; the spec must "
                            "describe every plugin parameter once (re-probe the plugin)")
    specs = tuple(_parse_param(source, k, p, len(params)) for k, p in enumerate(params))
    try:
        synth_spec = SynthSpec(name or os.path.splitext(os.path.basename(plugin))[0] or "vst", specs)
    except ValueError as e:  # duplicate names
        dup = [p.name for p in specs if sum(q.name == p.name for q in specs) > 1]
        raise SpecError(f"{source}: parameters: {e}: {sorted(set(dup))}; rename them (names must be unique)") from None
    keys = ("fresh_instance_max_diff", "fresh_process_max_diff") if fresh else (
        "same_host_max_diff", "fresh_instance_max_diff", "fresh_process_max_diff")
    diffs = [float(rep[k]) for k in keys if _is_num(rep.get(k))]
    return VstSpec(synth_spec, channels, plugin_id, reproducible, fresh, max(diffs) if diffs else None,
                   os.fspath(source), plugin)


def load_spec(spec_path: str | os.PathLike) -> VstSpec:
    """Read and validate a spec file (:class:`SpecError` naming the file and the key)."""
    spec_path = os.fspath(spec_path)
    try:
        with open(spec_path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file {spec_path} not found; probe the plugin: "
                        "python -m proxies.probe PLUGIN_PATH --out SPEC.json") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{spec_path}: not UTF-8 text ({e}); it must be the JSON the probe wrote") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{spec_path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                        "fix the edit or re-probe the plugin") from None
    return parse_spec(data, spec_path)


def spec_cache_dir() -> str:
    """``~/.cache/synthprog/specs`` (``$XDG_CACHE_HOME/synthprog/specs`` when set)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "synthprog", "specs")


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(os.fspath(path).rstrip(os.sep)))[0]


def find_spec(path: str | os.PathLike, spec_path: str | os.PathLike | None = None) -> str:
    """The spec file for the plugin at ``path``: ``spec_path``, else ``<path without suffix>.json``,
    else ``~/.cache/synthprog/specs/<stem>.json``; :class:`SpecError` with the probe command if none."""
    if spec_path is not None:
        return os.fspath(spec_path)
    path = os.fspath(path).rstrip(os.sep)
    candidates = [os.path.splitext(path)[0] + ".json", os.path.join(spec_cache_dir(), _stem(path) + ".json")]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise SpecError(f"no parameter spec for {path}: looked for {' and '.join(candidates)}. Probe the plugin "
                    f"once: python -m proxies.probe {path} --out {candidates[1]}  (or pass the spec path)")


# --------------------------------------------------------------------------------- presets
class _Fxck(NamedTuple):
    """What the FxCk reader/writer needs to know about one plugin (picklable)."""

    plugin: str
    plugin_id: str
    n_params: int
    names: tuple[str, ...]


def _read_preset(fmt: _Fxck, path: str, index: int | None = None) -> tuple[str, np.ndarray]:
    if index not in (None, 0):
        raise FxpError(f"{path}: index {index} given, but an FxCk .fxp holds a single program; drop the index",
                       source=os.fspath(path))
    name, n = read_fxck(path, plugin_id=fmt.plugin_id or None, n_params=fmt.n_params, param_names=fmt.names,
                        plugin=fmt.plugin)
    return name or _stem(os.fspath(path)) or "FxCk", n


def _read_all(fmt: _Fxck, path: str) -> list[tuple[str, np.ndarray]]:
    return [_read_preset(fmt, path)]


def _write_preset(fmt: _Fxck, path: str, name: str, normalized: np.ndarray) -> list[str]:
    """PATH.fxp (FxCk, the plugin's ID), written atomically."""
    out = os.path.splitext(os.fspath(path))[0] + ".fxp"
    write_fxck(out, normalized, name, fmt.plugin_id or None, n_params=fmt.n_params, param_names=fmt.names)
    return [out]


def _never_reproducible(normalized: Any) -> np.ndarray:
    return np.zeros(np.asarray(normalized).shape[:-1], dtype=bool)


def fresh_voice(normalized: Any, notes: Any) -> frozenset[int]:
    """``PluginInfo.fresh_voices`` of a plugin that must render every preset from a fresh instance:
    every preset uses "voice 0", so the host gives each one a new instance (a pool forks)."""
    return _VOICE_0


_VOICE_0 = frozenset({0})


def _open_unreproducible_engine(info: Any, sample_rate: int, workers: int = 2, **options: Any):
    """:func:`proxies.host.open_engine` for a plugin the probe found not reproducible: the same pool,
    but its ``reproducible`` says False for every row (a fork-mode pool would claim every preset
    reproducible, which holds for a plugin seeded once per process only within one worker)."""
    from proxies.host import open_engine  # noqa: PLC0415

    return open_engine(info, sample_rate, workers, **options)._replace(reproducible=_never_reproducible)


def _always_noise(normalized: Any) -> np.ndarray:
    return np.ones(np.asarray(normalized).shape[:-1], dtype=bool)


# ----------------------------------------------------------------------------------- synth
def _processor_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "vst"


def vst_synth(path: str | os.PathLike, spec_path: str | os.PathLike | None = None, *, name: str | None = None,
              install_hint: str = "", description: str = "") -> "Synth":
    """A :class:`proxies.synth.Synth` for the plugin at ``path`` from its probed spec.

    Args:
        path: a VST2 ``.so`` or VST3 bundle (need not exist yet: it is loaded by ``open_engine``).
        spec_path: the spec JSON; None looks next to the plugin, then in the spec cache
            (:func:`find_spec`).
        name: registry name (default ``vst:<path>``).
        install_hint: shown when the plugin file is missing.
        description: one line for humans (default: derived from the spec).

    Raises :class:`SpecError` for a missing or malformed spec. Reads only the JSON.
    """
    from proxies.host import PluginInfo, open_engine  # noqa: PLC0415 (light: no DawDreamer import)
    from proxies.synth import NoteConvention, PresetFormats, Synth  # noqa: PLC0415

    path = os.fspath(path)
    vs = load_spec(find_spec(path, spec_path))
    spec = vs.spec
    name = name or f"vst:{path}"
    fmt = _Fxck(spec.name, vs.plugin_id, spec.n_params, spec.names)
    try:
        plugin_id_bytes(vs.plugin_id)
    except FxpError as e:
        raise SpecError(f"{vs.path}: plugin_id: {e}") from None
    info = PluginInfo(
        name=_processor_name(spec.name),
        default_path=path,
        spec=spec,
        install_hint=install_hint,
        fresh_voices=fresh_voice if vs.fresh_instance else None,
        uses_noise=None if vs.reproducible else _always_noise,
        read_preset=functools.partial(_read_preset, fmt),
    )
    n_cat = len(spec.categorical_indices)
    n_fixed = spec.n_params - len(spec.learned_indices)
    if not description:
        description = (f"{spec.name} (VST through DawDreamer, spec {vs.path}): {spec.n_params} parameters "
                       f"({n_cat} categorical, {n_fixed} fixed), {vs.channels} channel"
                       f"{'s' if vs.channels != 1 else ''}")
    if not vs.reproducible:
        diff = f", the probe measured a max difference of {vs.max_diff:.3g}" if vs.max_diff is not None else ""
        description += (f"; NOT reproducible (the spec says \"reproducible\": false{diff}): renders of the same "
                        "preset may differ, so no preset counts as reproducible")
    return Synth(
        name=name,
        spec=spec,
        channels=vs.channels,
        open_engine=functools.partial(open_engine, info) if vs.reproducible else functools.partial(
            _open_unreproducible_engine, info),
        presets=PresetFormats(
            suffixes=(".fxp",),
            read=functools.partial(_read_preset, fmt),
            read_all=functools.partial(_read_all, fmt),
            write=functools.partial(_write_preset, fmt),
            write_suffix=".fxp",
            corpus=None,
            error=FxpError,
        ),
        notes=NoteConvention(note_off_quantum=1, note_off_rounding="floor"),
        proxy=None,
        reproducible=_always_reproducible if vs.reproducible else _never_reproducible,
        spectral_params=(),
        description=description,
        install_hint=install_hint,
        plugin=info,
    )


def _always_reproducible(normalized: Any) -> np.ndarray:
    return np.ones(np.asarray(normalized).shape[:-1], dtype=bool)


@functools.lru_cache(maxsize=1)
def _nekobi():
    return vst_synth(NEKOBI_PATH, NEKOBI_SPEC, name="nekobi",
                     install_hint="sudo apt-get install dpf-plugins-vst",
                     description="Nekobi 1.1 (DPF, Debian dpf-plugins-vst; VST2 through DawDreamer): a TB-303-like "
                                 "mono synth, 8 parameters (waveform square/triangle, tuning and volume fixed), "
                                 "no proxy")


def __getattr__(name: str) -> Any:
    if name == "NEKOBI":  # built on first access: reads the shipped spec (no plugin I/O)
        return _nekobi()
    raise AttributeError(f"module 'proxies.vst' has no attribute {name!r}")
