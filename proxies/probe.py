"""Probe a VST plugin through DawDreamer and write its parameter spec (JSON) for :mod:`proxies.vst`.

Usage::

    python -m proxies.probe PLUGIN_PATH --out SPEC.json [--sr 44100] [--points 33] [--seed 0]
        [--presets 3] [--no-render-check]

What it does, on one plugin instance (nothing plugin-specific; any VST2 ``.so`` or VST3 bundle):

1. reads the parameter count, names (``get_parameter_name``), units (the ``label`` of
   ``get_parameters_description``), output channels, the defaults (the normalized values the
   plugin reports right after loading) and the 4-character VST2 ID (from the ``fxID`` field of
   the state DawDreamer's ``save_state`` writes for a VST2 plugin; VST3 states carry none: then
   ``""``);
2. sweeps every parameter over ``4 * (points - 1) + 1`` normalized values (129 by default) and
   reads the plugin's display text at each (``get_parameter_text``), then classifies it:

   * **categorical**: the text shows at most 32 distinct values in contiguous runs, and either
     they are not numbers (``Square``, ``Saw``) or they are integers that change in steps (the
     finer sweep finds no value the ``points`` sweep missed). Choice ``j`` of ``k`` is set with
     normalized ``j / (k - 1)``; the probe sets each grid value and checks the plugin shows that
     choice (if not, the parameter stays continuous, with a note);
   * **fixed**: the text never changes while other parameters' texts do;
   * **continuous**: everything else; ``display_min`` / ``display_max`` are the smallest and
     largest numbers shown, the unit is the label, else the text's suffix (Hz, kHz, ms, s, dB,
     %, ...; kHz is converted to Hz and ms to s when both appear);
3. marks parameters that make no sense to randomise ``"prior": "fixed"`` by their names (master
   or output volume / gain, tuning / transpose, bypass, polyphony, MIDI or pitch-bend settings)
   and prints which;
4. checks reproducibility (unless ``--no-render-check``): the default preset and ``--presets``
   random presets (from the probed prior), a held note, rendered through
   :class:`proxies.host.PluginHost` (the generic protocol): each again after the others in the
   same host, then with a fresh plugin instance per preset (in this process, both orders, and
   in a new process); renders must match sample for sample (:func:`check_reproducibility`).
   A plugin that carries state from one render to the next (Nekobi) but renders identically
   from a fresh instance gets ``"fresh_instance": true``: its host then renders every preset
   from a fresh instance (a render pool: a fork of a pristine one, ~10-20 ms).

Exit status 0 on success, 2 for bad arguments (a missing file, not a plugin DawDreamer loads,
an unwritable ``--out``) with the reason on stderr.

The spec JSON (meant to be reviewed and edited; :func:`proxies.vst.parse_spec` validates it and
names any unknown key or wrong type)::

    {
      "format": 1,                      # spec format version
      "name": "Nekobi-vst",             # the synth's name (the plugin file's stem)
      "plugin": "/usr/lib/vst/Nekobi-vst.so",
      "plugin_id": "DNek",              # VST2 unique ID written into FxCk .fxp files ("" unknown)
      "channels": 1,                    # output channels
      "n_params": 8,                    # must equal the length of "parameters"
      "sample_rate": 44100,             # the probe's rate (informational)
      "reproducible": true,             # same preset -> same samples, whatever came before
      "fresh_instance": true,           # ... provided each preset gets a fresh plugin instance
      "reproducibility": {              # what the probe measured (informational)
        "same_host_max_diff": 0.156, "fresh_instance_max_diff": 0.0, "fresh_process_max_diff": 0.0,
        "presets": 4, "duration_s": 1.0, "note": [60, 100, 0.5], "peak": 0.13},
      "notes": ["..."],                 # what the probe (or you) noticed
      "parameters": [                   # one object per parameter, in plugin index order
        {"name": "Waveform", "index": 0,
         "kind": "categorical",         # "continuous" | "categorical" | "fixed"
         "choices": [{"name": "Square", "normalized": 0.0}, {"name": "Triangle", "normalized": 1.0}],
         "unit": "",                    # display unit ("" none)
         "default_normalized": 0.0,     # the value the plugin reports after loading
         "display_min": null, "display_max": null,   # numbers shown at the extremes (null: none)
         "prior": "uniform",            # random presets: "uniform" or "fixed" (always the default)
         "display": [[0, "Square"], [0.25, "Square"], ...],   # text at 5 points (informational)
         "description": ""}             # optional, for humans
      ]
    }

Editing: set ``"prior": "fixed"`` to hold a parameter at ``default_normalized`` (change the
default to hold it elsewhere); turn a continuous parameter into ``"categorical"`` by listing its
choices (``normalized`` must be ``j / (k - 1)``); ``"fixed"`` kinds need ``"prior": "fixed"``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from typing import Any, Callable, Sequence

import numpy as np

from proxies.host import preserve_fp_env

__all__ = [
    "MAX_CHOICES",
    "ProbeError",
    "check_reproducibility",
    "classify",
    "fixed_by_name",
    "format_spec_json",
    "main",
    "parse_display",
    "preserve_fp_env",
    "probe",
]

PLUGIN_SUFFIXES = (".so", ".vst3", ".dll", ".vst", ".dylib")
MAX_CHOICES = 32
FINE = 4  # the fine sweep has FINE times the points' resolution
DISPLAY_AT = (0.0, 0.25, 0.5, 0.75, 1.0)

#: name patterns (lower case) whose parameters get the "fixed" prior, and why.
FIXED_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"^\s*(master|main|output|out)?\s*(vol|volume|gain|level|amp|amplitude)\s*$", "output level"),
    (r"^\s*(master|main|output|out)\s+\w*\s*(vol|volume|gain|level)\b", "output level"),
    (r"^\s*(master\s*|global\s*|fine\s*|coarse\s*)?(tune|tuning|transpose|pitch)\s*$", "tuning (the note sets the pitch)"),
    (r"\bbypass\b", "bypass"),
    (r"\b(polyphony|voices|voice\s*count|midi|channel|pitch\s*bend|bend\s*range|program)\b",
     "performance / host setting"),
)

_NUMBER = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf(?:inity)?)\s*(.*?)\s*$",
                     re.IGNORECASE)
_UNIT = re.compile(r"^[A-Za-z%°µ/]{1,8}$")
_UNIT_SCALE = {"khz": ("Hz", 1000.0), "ms": ("s", 0.001)}  # applied only when both units appear


class ProbeError(Exception):
    """Bad arguments or a file that is not a plugin (exit status 2)."""


# ------------------------------------------------------------------------------ display text
def parse_display(text: str) -> tuple[float | None, str]:
    """``"440.0 Hz"`` -> ``(440.0, "Hz")``; ``"Square"`` -> ``(None, "")``; ``"-inf dB"`` -> ``(-inf, "dB")``."""
    m = _NUMBER.match(text or "")
    if not m:
        return None, ""
    suffix = m.group(2)
    if suffix and not _UNIT.match(suffix):
        return None, ""
    return float(m.group(1)), suffix


def _runs(texts: Sequence[str], grid: np.ndarray) -> list[tuple[str, float, float]]:
    """Contiguous runs of equal text: ``(text, first normalized, last normalized)``."""
    out: list[tuple[str, float, float]] = []
    for t, x in zip(texts, grid):
        if out and out[-1][0] == t:
            out[-1] = (t, out[-1][1], float(x))
        else:
            out.append((t, float(x), float(x)))
    return out


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        n = n or "(empty)"
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def classify(name: str, index: int, texts: Sequence[str], grid: np.ndarray, *, label: str = "",
             default: float = 0.0, text_at: Callable[[float], str] | None = None,
             texts_vary_elsewhere: bool = True) -> tuple[dict[str, Any], list[str]]:
    """One parameter's spec entry from its display texts over ``grid`` (the fine sweep).

    ``text_at(n)`` (set the value, read the text) verifies the categorical grid; ``texts`` at
    every ``FINE``-th grid point form the coarse sweep. Returns ``(entry, notes)``.
    """
    notes: list[str] = []
    texts = [str(t).strip() for t in texts]
    grid = np.asarray(grid, dtype=np.float64)
    runs = _runs(texts, grid)
    coarse = _runs(texts[::FINE], grid[::FINE])
    parsed = [parse_display(t) for t in texts]
    numeric = all(v is not None for v, _ in parsed)
    entry: dict[str, Any] = {"name": name, "index": index, "kind": "continuous", "choices": None,
                             "unit": label.strip(), "default_normalized": float(default),
                             "display_min": None, "display_max": None, "prior": "uniform"}
    display = [[x, texts[int(round(x * (len(grid) - 1)))]] for x in DISPLAY_AT]
    # units and numbers (mixed kHz/Hz or ms/s shown in one unit)
    suffixes = {u for v, u in parsed if v is not None and u}
    scale = {u: 1.0 for u in suffixes}
    if len(suffixes) > 1:
        for u in suffixes:
            base = _UNIT_SCALE.get(u.lower())
            if base and base[0] in suffixes:
                scale[u] = base[1]
    if not entry["unit"] and suffixes:
        main = [u for u in suffixes if scale[u] == 1.0]
        entry["unit"] = sorted(main or suffixes, key=lambda u: -sum(1 for _, s in parsed if s == u))[0]
    values = [v * scale.get(u, 1.0) for v, u in parsed if v is not None and math.isfinite(v)]

    if len(runs) == 1:
        if texts_vary_elsewhere:
            entry.update(kind="fixed", prior="fixed")
            notes.append(f"{name}: the display text never changes ({texts[0]!r}): kind 'fixed' (held at its "
                         "default); make it 'continuous' if it does change the sound")
        elif values:
            entry.update(display_min=min(values), display_max=max(values))
        entry["display"] = display
        return entry, notes

    integers = numeric and all(v is not None and math.isfinite(v) and float(v).is_integer() for v, _ in parsed)
    stepped_numbers = integers and len(runs) == len(coarse)
    few = len(runs) <= MAX_CHOICES
    if few and (not numeric or stepped_numbers):
        k = len(runs)
        if numeric:
            names = [f"{_fmt(parse_display(t)[0])}{(' ' + parse_display(t)[1]) if parse_display(t)[1] else ''}"
                     for t, _, _ in runs]
        else:
            names = [t for t, _, _ in runs]
        names = _unique(names)
        bad = []
        if text_at is not None:
            for j, (t, _, _) in enumerate(runs):
                shown = str(text_at(j / (k - 1))).strip()
                if shown != t:
                    bad.append(f"choice {j} ({t!r}) at {j}/{k - 1} shows {shown!r}")
        if not bad:
            entry.update(kind="categorical", choices=[{"name": n, "normalized": j / (k - 1)}
                                                      for j, n in enumerate(names)])
            if numeric:
                entry.update(display_min=min(values), display_max=max(values))
            entry["display"] = display
            return entry, notes
        notes.append(f"{name}: {k} choices ({', '.join(names)}) but the equally spaced grid does not select them "
                     f"({'; '.join(bad[:3])}): kept continuous")
    elif few and numeric and integers:
        notes.append(f"{name}: integer display with {len(runs)} values, more than the coarse sweep saw: "
                     "treated as continuous")
    if not numeric:
        n_text = sum(1 for v, _ in parsed if v is None)
        if n_text == len(parsed):
            notes.append(f"{name}: {len(runs)} distinct non-numeric texts (more than {MAX_CHOICES}): continuous")
    if values:
        entry.update(display_min=min(values), display_max=max(values))
    entry["display"] = display
    return entry, notes


def fixed_by_name(name: str) -> str | None:
    """Why a parameter called ``name`` should not be randomised (None: sample it)."""
    low = name.lower()
    if re.search(r"\b(osc|oscillator|op|operator|lfo|env|filter)\b|\d", low):
        # per-oscillator levels and tunings are sound design; only global ones are fixed
        if not re.search(r"\b(bypass|polyphony|midi|channel)\b", low):
            return None
    for pattern, why in FIXED_NAME_RULES:
        if re.search(pattern, low):
            return why
    return None


# ---------------------------------------------------------------------------- plugin access
def _quiet_load(path: str, sample_rate: int):
    """A DawDreamer engine and processor for ``path``, its chatter captured; ProbeError if it fails."""
    import dawdreamer  # noqa: PLC0415

    from proxies.host import _captured_output  # noqa: PLC0415

    engine = dawdreamer.RenderEngine(int(sample_rate), 512)
    printed = ""
    try:
        with preserve_fp_env(), _captured_output() as out:
            try:
                proc = engine.make_plugin_processor("probe", path)
            finally:
                printed = out()
    except Exception as e:  # noqa: BLE001 - DawDreamer raises RuntimeError("Unable to load plugin.")
        said = " ".join(printed.split())[-300:]
        raise ProbeError(f"{path} is not a plugin DawDreamer can load ({e}{'; it printed: ' + said if said else ''}); "
                         "expected a VST2 .so or a VST3 bundle built for this machine") from None
    return engine, proc


def _descriptions(proc) -> list[dict]:
    from proxies.host import _captured_output  # noqa: PLC0415

    try:
        with _captured_output():
            d = proc.get_parameters_description()
        return list(d) if isinstance(d, list) else []
    except Exception:  # noqa: BLE001 - labels are a nicety
        return []


def _plugin_id(proc) -> str:
    from proxies.fxp import plugin_id_of  # noqa: PLC0415

    fd, tmp = tempfile.mkstemp(suffix=".fxb")
    os.close(fd)
    try:
        proc.save_state(tmp)
        with open(tmp, "rb") as f:
            return plugin_id_of(f.read(4096))
    except Exception:  # noqa: BLE001
        return ""
    finally:
        os.unlink(tmp)


def _sweep(proc, index: int, grid: np.ndarray, default: float) -> list[str]:
    texts = []
    for x in grid:
        proc.set_parameter(index, float(x))
        texts.append(str(proc.get_parameter_text(index)))
    proc.set_parameter(index, 0.0 if default >= 0.5 else 1.0)  # a far value first (JUCE skips near-equal sets)
    proc.set_parameter(index, float(default))
    return texts


# ------------------------------------------------------------------------ reproducibility
def _host(path: str, sample_rate: int, fresh_instance: bool):
    from proxies.host import PluginHost, PluginInfo  # noqa: PLC0415
    from proxies.vst import fresh_voice  # noqa: PLC0415

    with preserve_fp_env():  # (a fresh instance later loads no library again: only this first load matters)
        return PluginHost(PluginInfo(_name_of(path), path, fresh_voices=fresh_voice if fresh_instance else None),
                          sample_rate)


def _render_all(path: str, sample_rate: int, normalized: np.ndarray, notes, duration_s: float,
                fresh_instance: bool = True) -> np.ndarray:
    host = _host(path, sample_rate, fresh_instance)
    return np.stack([host.render(n, notes, duration_s) for n in normalized])


def _render_fresh_process(path: str, sample_rate: int, normalized: np.ndarray, notes, duration_s: float,
                          fresh_instance: bool = True) -> np.ndarray:
    """The same renders in a new Python process (the plugin loaded afresh)."""
    import multiprocessing as mp  # noqa: PLC0415
    from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(_render_all, path, sample_rate, normalized, notes, duration_s,
                         fresh_instance).result(timeout=600)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return math.inf
    with np.errstate(invalid="ignore"):
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if np.isnan(d).any():
        return math.inf
    return float(d.max()) if d.size else 0.0


def check_reproducibility(path: str, sample_rate: int, normalized: np.ndarray, *, note: int = 60,
                          velocity: int = 100, hold_s: float = 0.5, duration_s: float = 1.0) -> dict[str, Any]:
    """Whether renders of the same preset are identical, sample for sample.

    Renders ``normalized [K, P]`` (a held note) through :class:`proxies.host.PluginHost`:

    * ``same_host_max_diff``: one host and instance (the generic protocol), the presets in order,
      then again in reverse order (each preset after different ones);
    * ``fresh_instance_max_diff``: the same with a fresh plugin instance for every preset (what a
      render pool does with a fork per preset), in order and in reverse order;
    * ``fresh_process_max_diff``: those fresh-instance renders against the same in a new process.

    ``reproducible``: the plain protocol is (all three 0 and the plain renders equal the
    fresh-instance ones), or fresh instances are (``fresh_instance``: the spec then asks the host
    for a fresh instance per preset). Non-finite differences are reported as None (not
    reproducible). Also returns ``presets``, ``duration_s``, ``note`` and ``peak``.
    """
    from proxies.notes import Note  # noqa: PLC0415

    notes = (Note(int(note), int(velocity), 0.0, float(hold_s)),)
    n = np.asarray(normalized, dtype=np.float64)
    plain = _host(path, sample_rate, fresh_instance=False)
    first = np.stack([plain.render(x, notes, duration_s) for x in n])
    again = np.stack([plain.render(x, notes, duration_s) for x in n[::-1]])[::-1]
    del plain
    fresh = _host(path, sample_rate, fresh_instance=True)
    fresh_first = np.stack([fresh.render(x, notes, duration_s) for x in n])
    fresh_again = np.stack([fresh.render(x, notes, duration_s) for x in n[::-1]])[::-1]
    del fresh
    other = _render_fresh_process(path, sample_rate, n[::-1], notes, duration_s, True)[::-1]
    same = _max_diff(first, again)
    inst = _max_diff(fresh_first, fresh_again)
    proc = _max_diff(fresh_first, other)
    plain_ok = same == 0.0 and inst == 0.0 and proc == 0.0 and _max_diff(first, fresh_first) == 0.0
    fresh_ok = inst == 0.0 and proc == 0.0
    peak = float(np.nanmax(np.abs(fresh_first))) if fresh_first.size else 0.0

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return {
        "reproducible": bool(plain_ok or fresh_ok),
        "fresh_instance": bool(fresh_ok and not plain_ok),
        "same_host_max_diff": finite(same),
        "fresh_instance_max_diff": finite(inst),
        "fresh_process_max_diff": finite(proc),
        "presets": int(n.shape[0]),
        "duration_s": float(duration_s),
        "note": [int(note), int(velocity), float(hold_s)],
        "peak": peak,
    }


# ------------------------------------------------------------------------------------ probe
def _name_of(path: str) -> str:
    return os.path.splitext(os.path.basename(os.fspath(path).rstrip(os.sep)))[0] or "plugin"


def probe(path: str, sample_rate: int = 44100, points: int = 33, *, render_check: bool = True, presets: int = 3,
          seed: int = 0) -> dict[str, Any]:
    """Probe the plugin at ``path``; returns the spec as a dict (see the module docstring)."""
    path = os.path.abspath(path)
    engine, proc = _quiet_load(path, sample_rate)
    n_params = int(proc.get_plugin_parameter_size())
    channels = int(proc.get_num_output_channels())
    if n_params < 1:
        raise ProbeError(f"{path} reports no parameters: nothing to program")
    if channels < 1:
        raise ProbeError(f"{path} has no audio outputs: not an instrument")
    defaults = [float(proc.get_parameter(i)) for i in range(n_params)]
    names = [str(proc.get_parameter_name(i)) for i in range(n_params)]
    desc = _descriptions(proc)
    labels = [""] * n_params
    for d in desc:
        try:
            labels[int(d.get("index"))] = str(d.get("label") or "")
        except (TypeError, ValueError, IndexError):
            pass
    plugin_id = _plugin_id(proc)
    notes: list[str] = []
    if not plugin_id:
        notes.append("no VST2 plugin ID found (DawDreamer's saved state is not a VST2 .fxb, e.g. a VST3 "
                     "plugin): FxCk files are written with four NUL bytes and not checked on reading")
    # names must be unique for the spec
    seen: dict[str, int] = {}
    for i, nm in enumerate(names):
        nm = nm.strip() or f"param {i}"
        seen[nm] = seen.get(nm, 0) + 1
        if seen[nm] > 1:
            notes.append(f"parameter {i}: name {nm!r} repeats; renamed {nm} ({seen[nm]})")
            nm = f"{nm} ({seen[nm]})"
        names[i] = nm
    grid = np.linspace(0.0, 1.0, FINE * (int(points) - 1) + 1)
    sweeps = [_sweep(proc, i, grid, defaults[i]) for i in range(n_params)]
    varying = [len(set(t)) > 1 for t in sweeps]
    if not any(varying):
        notes.append("the plugin shows the same text for every value of every parameter (no parameter text): "
                     "every parameter is treated as continuous")

    def text_at(i: int) -> Callable[[float], str]:
        def f(x: float) -> str:
            proc.set_parameter(i, float(x))
            return str(proc.get_parameter_text(i))
        return f

    params = []
    for i in range(n_params):
        entry, why = classify(names[i], i, sweeps[i], grid, label=labels[i], default=defaults[i],
                              text_at=text_at(i), texts_vary_elsewhere=any(varying))
        proc.set_parameter(i, 0.0 if defaults[i] >= 0.5 else 1.0)
        proc.set_parameter(i, defaults[i])
        notes += why
        reason = fixed_by_name(names[i]) if entry["kind"] != "fixed" else None
        if reason:
            entry["prior"] = "fixed"
            entry["description"] = f"prior fixed by the probe's name heuristics: {reason}"
            notes.append(f"{names[i]}: prior 'fixed' at its default ({reason}); set \"prior\": \"uniform\" to "
                         "sample it")
        params.append(entry)
    del proc, engine
    spec: dict[str, Any] = {
        "format": 1,
        "name": _name_of(path),
        "plugin": path,
        "plugin_id": plugin_id,
        "channels": channels,
        "n_params": n_params,
        "sample_rate": int(sample_rate),
        "reproducible": True,
        "fresh_instance": False,
        "reproducibility": {},
        "notes": notes,
        "parameters": params,
    }
    if render_check:
        from proxies.vst import parse_spec  # noqa: PLC0415

        synth_spec = parse_spec(spec, "<probed spec>").spec
        rng = np.random.default_rng(seed)
        rows = [synth_spec.defaults_normalized]
        if presets > 0:
            rows += list(synth_spec.snap_normalized(synth_spec.sample_normalized(rng, presets)))
        rep = check_reproducibility(path, sample_rate, np.clip(np.stack(rows), 0.0, 1.0))
        spec["reproducible"] = rep.pop("reproducible")
        spec["fresh_instance"] = rep.pop("fresh_instance")
        spec["reproducibility"] = rep
        if rep["peak"] == 0.0:
            notes.append("every reproducibility render was silent: reproducibility is not established")
        if spec["fresh_instance"]:
            notes.append("renders depend on what the plugin instance rendered before (same host: max difference "
                         f"{rep['same_host_max_diff']:.3g}) but a fresh instance per preset renders identically, in "
                         "this process and in a new one: \"fresh_instance\": true (the pool forks a pristine "
                         "instance per preset)")
        elif not spec["reproducible"]:
            notes.append("renders of the same preset differ even with a fresh plugin instance per preset (see "
                         "'reproducibility'): the output depends on randomness or process state; compare its "
                         "renders statistically, not sample by sample")
    else:
        spec["reproducible"] = False
        spec["reproducibility"] = {"checked": False}
        notes.append("reproducibility not checked (--no-render-check): assumed NOT reproducible; re-probe to check")
    return spec


# ------------------------------------------------------------------------------------- JSON
def format_spec_json(spec: Any, indent: int = 0, width: int = 110) -> str:
    """JSON with short objects and lists on one line (a readable spec, one object per parameter)."""
    import json  # noqa: PLC0415

    flat = json.dumps(spec, ensure_ascii=False)
    if not isinstance(spec, (dict, list)) or len(flat) + indent <= width or not spec:
        return flat
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(spec, dict):
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {format_spec_json(v, indent + 2, width)}"
                 for k, v in spec.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [inner + format_spec_json(v, indent + 2, width) for v in spec]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


def _summary(spec: dict[str, Any]) -> str:
    lines = [f"{spec['name']}: {spec['n_params']} parameters, {spec['channels']} output channel(s), "
             f"plugin ID {spec['plugin_id'] or '(none found)'}"]
    for p in spec["parameters"]:
        if p["kind"] == "categorical":
            what = "categorical: " + ", ".join(c["name"] for c in p["choices"])
        elif p["display_min"] is not None:
            what = f"{p['kind']}: {_fmt(p['display_min'])}..{_fmt(p['display_max'])} {p['unit']}".rstrip()
        else:
            what = p["kind"]
        prior = "  [prior fixed]" if p["prior"] == "fixed" else ""
        lines.append(f"  {p['index']:3d} {p['name'][:28]:28s} {what[:70]}  default {p['default_normalized']:.4g}{prior}")
    rep = spec.get("reproducibility") or {}
    if rep:
        how = " with a fresh plugin instance per preset" if spec.get("fresh_instance") else ""
        lines.append(f"reproducible: {spec['reproducible']}{how} (max difference: same host "
                     f"{rep.get('same_host_max_diff')}, fresh instances {rep.get('fresh_instance_max_diff')}, "
                     f"fresh process {rep.get('fresh_process_max_diff')}; {rep.get('presets')} presets, "
                     f"peak {rep.get('peak', 0):.3g})")
    for n in spec["notes"]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m proxies.probe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="The JSON format is described in the module docstring "
                                       "(python -c 'import proxies.probe; help(proxies.probe)').")
    p.add_argument("plugin", help="a VST2 .so or VST3 bundle")
    p.add_argument("--out", required=True, help="the spec JSON to write")
    p.add_argument("--sr", type=int, default=44100, help="sample rate (default 44100)")
    p.add_argument("--points", type=int, default=33, help="sweep points per parameter (default 33; the fine "
                   f"sweep uses {FINE}x)")
    p.add_argument("--presets", type=int, default=3, help="random presets in the reproducibility check (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of those presets (default 0)")
    p.add_argument("--no-render-check", action="store_true", help="skip the reproducibility renders")
    return p


def _check_args(args: argparse.Namespace) -> None:
    from proxies.notes import check_sample_rate  # noqa: PLC0415

    path = args.plugin
    if not os.path.exists(path):
        raise ProbeError(f"plugin {path} not found; give the path of a VST2 .so or a VST3 bundle "
                         "(e.g. /usr/lib/vst/Nekobi-vst.so)")
    if not path.rstrip(os.sep).lower().endswith(PLUGIN_SUFFIXES):
        raise ProbeError(f"{path} is not a plugin: expected a file or bundle ending in {', '.join(PLUGIN_SUFFIXES)}")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if path.endswith(".so") and head != b"\x7fELF":
            raise ProbeError(f"{path} is not a plugin: not a shared library (no ELF header)")
    try:
        check_sample_rate(args.sr)
    except ValueError as e:
        raise ProbeError(f"--sr: {e}") from None
    if not 3 <= args.points <= 257:
        raise ProbeError(f"--points must be in 3..257 (each parameter is swept at {FINE}x that many values), "
                         f"got {args.points}")
    if not 0 <= args.presets <= 64:
        raise ProbeError(f"--presets must be in 0..64 (each costs several renders), got {args.presets}")
    if args.seed < 0:
        raise ProbeError(f"--seed must be >= 0, got {args.seed}")
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        raise ProbeError(f"--out {args.out} is a folder; give a file name such as {os.path.join(args.out, 'spec.json')}")
    if not out.lower().endswith(".json"):
        raise ProbeError(f"--out {args.out}: expected a file name ending in .json (the spec is JSON)")
    folder = os.path.dirname(out)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise ProbeError(f"--out {args.out}: {folder} is a file, not a folder; choose another folder")
    if not os.path.isdir(folder):
        raise ProbeError(f"--out {args.out}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(out) and not os.access(out, os.W_OK)):
        raise ProbeError(f"--out {args.out}: not writable; choose a folder you can write to")
    from proxies.files import OutputPathError, check_output_path  # noqa: PLC0415

    try:
        check_output_path(out, "--out")
    except OutputPathError as e:  # a name too long, a read-only file system
        raise ProbeError(str(e)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _check_args(args)
        spec = probe(args.plugin, args.sr, args.points, render_check=not args.no_render_check,
                     presets=args.presets, seed=args.seed)
    except ProbeError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    from proxies.files import atomic_write_bytes  # noqa: PLC0415

    try:
        atomic_write_bytes(args.out, (format_spec_json(spec) + "\n").encode("utf-8"))
    except OSError as e:
        print(f"{parser.prog}: error: --out {args.out}: {e}", file=sys.stderr)
        return 2
    print(_summary(spec))
    print(f"wrote {args.out}; review it (priors, choices, units), then: get_synth('vst:{spec['plugin']}', "
          f"'{args.out}')")
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
