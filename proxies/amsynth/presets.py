"""amsynth preset files: single preset text, bank files and VST2 .fxp programs.

Formats (``shared/amsynth/README.md`` §9; parsers of amsynth 1.13.2 ``src/Preset.cpp`` and
``src/PresetController.cpp``, DawDreamer/JUCE ``loadFromFXBFile``):

* **Single preset text** (``.amSynth``, the VST chunk)::

      amSynth1.0preset
      <preset> <name> My Patch
      <parameter> amp_attack 0.1          (internal values, any subset, any order)
      <property> tuning_scl_file /x.scl   (optional; kept in ``Preset.properties``)

* **Bank** (``*.bank``): the exact header ``amSynth\\n``, then ``<preset> <name> NAME`` lines
  each followed by ``<parameter> NAME VALUE`` lines, then ``EOF``; at most 128 presets.
* **.fxp** (big-endian): ``FxCk`` (41 normalized float32; the generic VST2 reader/writer of
  :mod:`proxies.fxp`, with amsynth's ID ``amsy``), ``FPCh`` (the preset text as a
  NUL-terminated chunk) and ``FBCh`` (what DawDreamer's ``save_state`` writes; read only).

Values live in the *internal* space of :mod:`proxies.params` (text files) or the *normalized*
space (FxCk). A :class:`Preset` always holds the internal values the plugin itself would hold:
float32-exact, inside [min, max], stepped parameters on their grid.

Decisions (where amsynth's own behaviour is unsafe or history-dependent):

* **Missing parameters** take their defaults everywhere. In banks that is amsynth's own rule; a
  single preset / VST chunk would keep the plugin's *current* values instead, so the names
  that were absent are reported in :attr:`Preset.missing`.
* **Unknown parameter names** are errors: amsynth ``assert``\\ s on them and aborts the host process.
* **``unused``**: amsynth's single-preset parser skips ``<parameter> unused ...``, so we accept
  and ignore it there. Its bank parser has no such exception (it aborts), so in banks it is an
  error. We never write it.
* **Out-of-range values** are errors (amsynth would clamp silently). Off-grid values of stepped
  parameters are snapped with C ``roundf``, exactly as the plugin does (``Parameter::setValue``).
* **Numbers**: any decimal float (``-1.5``, ``.5``, ``2.``, ``1e-07``, ``+3``), finite. In banks an
  uppercase ``E`` exponent is rejected: amsynth's hand-written bank parser only takes the
  stream path for strings containing a lowercase ``e`` and would read ``1E-3`` as 13.
* **Written values** use the shortest of ``%.6g`` .. ``%.9g`` that reproduces the float32 value
  exactly (amsynth's own ``%g`` whenever that is exact), so amsynth-written banks are rewritten
  byte for byte and every value round-trips bit-exactly through our reader and the plugin's
  chunk parser. (amsynth's own bank reader accumulates digits in float32 and lands 0-4 float32
  steps below or above the value; a text value here always means the correctly rounded float32.)
* **Names**: amsynth's text parser joins the name's whitespace-separated tokens with single
  spaces, so text/FPCh names are written that way; banks keep names byte for byte.
* Every writer writes atomically (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from proxies import fxp as _fxp
from proxies.amsynth.spec import AMSYNTH
from proxies.files import atomic_write_bytes

__all__ = [
    "BANK_HEADER",
    "FACTORY_BANKS_DIR",
    "FactoryPresets",
    "MAX_BANK_PRESETS",
    "Preset",
    "PresetError",
    "PRESET_HEADER",
    "format_bank",
    "format_fxp_chunk",
    "format_fxp_params",
    "format_preset_text",
    "load_factory_banks",
    "parse_bank_text",
    "parse_fxp",
    "parse_preset_text",
    "read_bank",
    "read_fxp",
    "read_preset_file",
    "write_bank",
    "write_fxp_chunk",
    "write_fxp_params",
    "write_preset_text",
]

PRESET_HEADER = "amSynth1.0preset"
BANK_HEADER = b"amSynth\n"
MAX_BANK_PRESETS = 128
FACTORY_BANKS_DIR = "/usr/share/amsynth/banks"
FX_ID = b"amsy"
N_PARAMS = AMSYNTH.n_params

_NAMES = AMSYNTH.names
_INDEX = {n: i for i, n in enumerate(_NAMES)}
_MIN32 = AMSYNTH.minimum.astype(np.float32)
_MAX32 = AMSYNTH.maximum.astype(np.float32)
_STEP32 = AMSYNTH.step.astype(np.float32)
_STEPPED = AMSYNTH.step > 0
_DEFAULTS = AMSYNTH.defaults_internal
_DEFAULTS.setflags(write=False)
_UNKNOWN_FIX = (
    "amsynth aborts the whole host process on an unknown parameter name, so it must never "
    "reach the plugin; use one of: " + ", ".join(_NAMES)
)
_PLAIN_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

# .fxp layouts (VST2 SDK structs fxProgram / fxProgramSet / fxChunkSet, big-endian); the common
# header and FxCk live in proxies.fxp, the chunk kinds here
_FXP_COMMON = _fxp.COMMON  # chunkMagic byteSize fxMagic version fxID fxVersion count
_FPCH_HEADER = 60  # common 28 + name[28] + chunkSize
_FBCH_HEADER = 160  # common 28 + future[128] + chunkSize


class PresetError(ValueError):
    """Bad preset input: the message names the file, the line (or byte offset) and the fix."""

    def __init__(self, message: str, source: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.line = line


def _error(source: str, line: int | None, what: str, fix: str = "") -> PresetError:
    where = f"{source}, line {line}" if line is not None else source
    msg = f"{where}: {what}"
    if fix:
        msg += f"; {fix}"
    return PresetError(msg, source=source, line=line)


def _show(line: str, limit: int = 80) -> str:
    return repr(line if len(line) <= limit else line[:limit] + "...")


# ---------------------------------------------------------------------------------- values
def _plugin_values(internal: np.ndarray, source: str) -> np.ndarray:
    """Internal values as the plugin holds them: float32, range-checked, stepped ones snapped.

    Raises PresetError for non-finite or out-of-range values (the plugin would clamp them).
    Returns float64 ``[41]`` holding float32-exact values.
    """
    v = np.asarray(internal, dtype=np.float64)
    if v.shape != (N_PARAMS,):
        raise PresetError(
            f"{source}: expected {N_PARAMS} internal values (one per amsynth parameter), got shape {v.shape}",
            source=source,
        )
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PresetError(f"{source}: parameter {_NAMES[i]!r} is not finite ({float(v[i])!r})", source=source)
    v32 = v.astype(np.float32)
    out = (v32 < _MIN32) | (v32 > _MAX32)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise PresetError(
            f"{source}: parameter {_NAMES[i]!r} value {float(v[i])!r} is outside its range "
            f"[{AMSYNTH.params[i].minimum:g}, {AMSYNTH.params[i].maximum:g}]; give a value inside the range "
            "(the plugin would clamp it silently)",
            source=source,
        )
    safe_step = np.where(_STEPPED, _STEP32, np.float32(1))
    k = (v32 - _MIN32) / safe_step
    snapped = _MIN32 + (np.sign(k) * np.floor(np.abs(k) + np.float32(0.5))).astype(np.float32) * safe_step  # roundf
    return np.where(_STEPPED, snapped, v32).astype(np.float64)


def _internal_to_normalized(internal: np.ndarray) -> np.ndarray:
    """The plugin's ``getParameter``: float32 ``(v - min) / (max - min)``, as float64 in [0, 1].

    (In float64 the float32 maximum of freq_mod_amount would map to 1.0000000019.)
    """
    v = np.asarray(internal).astype(np.float32)
    return ((v - _MIN32) / (_MAX32 - _MIN32)).astype(np.float64)


def _format_internal(x: float) -> str:
    """Shortest ``%.6g`` .. ``%.9g`` text that parses back to the same float32 value."""
    f = np.float32(x)
    if f == 0:
        return "0"
    for digits in (6, 7, 8, 9):
        s = "%.*g" % (digits, float(f))
        if np.float32(float(s)) == f:
            return s
    raise AssertionError(f"%.9g did not round-trip float32 {f!r}")  # pragma: no cover (9 digits always do)


def _amsynth_bank_float(s: str) -> float:
    """amsynth 1.13's bank value parser (``float_from_string``), float32 step by step.

    Used to explain what amsynth would read when our reading differs.
    """
    if "e" in s:
        m = re.match(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", s)
        return float(np.float32(float(m.group(0)))) if m else float("nan")
    f32 = np.float32
    rez, fact = f32(0), f32(1)
    if s.startswith("-"):
        s, fact = s[1:], f32(-1)
    point_seen = False
    for ch in s:
        if ch == ".":
            point_seen = True
        elif "0" <= ch <= "9":
            if point_seen:
                fact = f32(fact / f32(10))
            rez = f32(f32(rez * f32(10)) + f32(int(ch)))
    return float(f32(rez * fact))


# ---------------------------------------------------------------------------------- Preset
@dataclass(frozen=True, eq=False)
class Preset:
    """One amsynth preset.

    Attributes:
        name: preset name (non-empty; no newline, carriage return or NUL; not the token
            ``<parameter>``).
        internal: internal values, float64 ``[41]`` in plugin index order, read-only. Stored as
            the plugin holds them: float32-exact, range-checked, stepped ones snapped.
        properties: ``<property> KEY VALUE`` lines of a VST chunk (tuning files), in order.
        missing: names absent from the source file, which took their defaults (metadata; not
            compared by ``==``). The plugin would keep its current values for these when
            loading a single preset or chunk.
    """

    name: str
    internal: np.ndarray
    properties: tuple[tuple[str, str], ...] = ()
    missing: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name, "Preset")
        values = _plugin_values(self.internal, f"Preset {self.name!r}")
        values.setflags(write=False)
        object.__setattr__(self, "internal", values)
        props = tuple((str(k), str(v)) for k, v in self.properties)
        for key, value in props:
            if not key or any(c.isspace() for c in key) or any(c in value for c in "\n\r\0"):
                raise PresetError(
                    f"Preset {self.name!r}: bad property {key!r} = {value!r}; keys are single words and "
                    "values one line"
                )
        object.__setattr__(self, "properties", props)
        unknown = [m for m in self.missing if m not in _INDEX]
        if unknown:
            raise PresetError(f"Preset {self.name!r}: unknown names in missing: {unknown}")
        object.__setattr__(self, "missing", tuple(self.missing))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preset):
            return NotImplemented
        return (
            self.name == other.name
            and np.array_equal(self.internal, other.internal)
            and self.properties == other.properties
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def normalized(self) -> np.ndarray:
        """Normalized values, float64 ``[41]`` in [0, 1]: ``(v - min) / (max - min)`` in float32,
        exactly what the plugin reports (``getParameter``) and what an FxCk stores."""
        return _internal_to_normalized(self.internal)

    @classmethod
    def from_normalized(cls, name: str, normalized: Sequence[float] | np.ndarray) -> "Preset":
        """The preset the plugin holds after ``set_parameter(i, n[i])`` for all 41 parameters.

        Uses the plugin's own float32 arithmetic (``v = n*(max-min)+min``, clamp, roundf snap).
        Raises PresetError for values outside [0, 1] or not finite (no silent clipping).
        """
        try:
            n = AMSYNTH.check_normalized(normalized, source=f"Preset {name!r}")
        except ValueError as e:
            raise PresetError(str(e)) from None
        if n.shape != (N_PARAMS,):
            raise PresetError(f"Preset {name!r}: expected {N_PARAMS} normalized values, got shape {n.shape}")
        return cls(name, AMSYNTH.normalized_to_internal(n).astype(np.float64))

    @classmethod
    def default(cls, name: str = "Default") -> "Preset":
        """amsynth's default preset (every parameter at its default)."""
        return cls(name, AMSYNTH.defaults_internal)

    def value(self, name: str) -> float:
        """Internal value of one parameter by name."""
        return float(self.internal[AMSYNTH.index_of(name)])

    def with_values(self, **values: float) -> "Preset":
        """A copy with some internal values changed by name, e.g. ``p.with_values(filter_cutoff=0.5)``."""
        v = self.internal.copy()
        for k, x in values.items():
            v[AMSYNTH.index_of(k)] = x
        return Preset(self.name, v, self.properties)


def _check_name(name: object, source: str) -> None:
    if not isinstance(name, str):
        raise PresetError(f"{source}: the preset name must be a str, got {type(name).__name__}")
    if not name.strip():
        raise PresetError(f"{source}: the preset name is empty; amsynth needs a non-empty name")
    bad = [c for c in "\n\r\0" if c in name]
    if bad:
        raise PresetError(f"{source}: preset name {name!r} contains {bad[0]!r}; names are one line of text")
    if "<parameter>" in name.split():
        raise PresetError(
            f"{source}: preset name {name!r} contains the token '<parameter>', which ends the name in "
            "amsynth's parser; rename it"
        )


# ------------------------------------------------------------------------ single preset text
def format_preset_text(preset: Preset) -> str:
    """The §9.1 text: header, name, all 41 parameters in index order, then ``<property>`` lines.

    The name is written with single spaces between its words (that is how amsynth reads it).
    """
    lines = [PRESET_HEADER, "<preset> <name> " + " ".join(preset.name.split())]
    lines += [f"<parameter> {n} {_format_internal(v)}" for n, v in zip(_NAMES, preset.internal)]
    lines += [f"<property> {k} {v}" for k, v in preset.properties]
    return "\n".join(lines) + "\n"


def parse_preset_text(text: str, source: str = "<preset text>", line_offset: int = 0) -> Preset:
    """Parse a single preset (§9.1). Missing parameters take defaults; see ``Preset.missing``.

    Args:
        text: the preset text (a VST chunk up to its NUL, or an ``.amSynth`` file).
        source: what to call the input in error messages (a file name).
        line_offset: added to line numbers in messages.
    Raises:
        PresetError naming ``source``, the line and the fix, for a bad header or name line, an
        unknown parameter name, a malformed or out-of-range value, a duplicate parameter, a
        ``<parameter>`` after a ``<property>`` line, or text without any ``<parameter>`` line.
    """
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1 + line_offset
        raise _error(source, line, "contains a NUL byte", "amsynth stops reading at a NUL; remove it")
    lines = text.split("\n")
    rows = [(i + 1 + line_offset, ln.rstrip("\r")) for i, ln in enumerate(lines)]
    rows = [(i, ln) for i, ln in rows if ln.strip()]
    if not rows or rows[0][1].split() != [PRESET_HEADER]:
        line, got = rows[0] if rows else (1 + line_offset, "")
        raise _error(
            source, line, f"expected the header line {PRESET_HEADER!r}, got {_show(got)}",
            "an amsynth preset text starts with 'amSynth1.0preset' (a bank starts with 'amSynth')",
        )
    if len(rows) < 2:
        raise _error(source, rows[0][0], "no '<preset> <name> NAME' line after the header",
                     "add a '<preset> <name> NAME' line")
    line, ln = rows[1]
    tokens = ln.split()
    if tokens[:2] != ["<preset>", "<name>"]:
        raise _error(source, line, f"expected '<preset> <name> NAME', got {_show(ln)}",
                     "the second line must be '<preset> <name> ' followed by the preset name")
    name_tokens = tokens[2:]
    if not name_tokens:
        raise _error(source, line, "the preset name is missing", "write a name after '<preset> <name> '")
    if "<parameter>" in name_tokens:
        raise _error(source, line, "the name contains the token '<parameter>'",
                     "put each '<parameter>' on its own line and rename the preset")
    name = " ".join(name_tokens)

    values = _DEFAULTS.copy()
    seen: dict[str, int] = {}
    properties: list[tuple[str, str]] = []
    n_parameter_lines = 0
    for line, ln in rows[2:]:
        tokens = ln.split()
        if tokens[0] == "<parameter>":
            if properties:
                raise _error(source, line, "a '<parameter>' line after a '<property>' line",
                             "amsynth stops reading parameters at the first '<property>'; "
                             "move the '<property>' lines to the end")
            if len(tokens) != 3:
                raise _error(source, line, f"expected '<parameter> NAME VALUE', got {_show(ln)}",
                             "write exactly one parameter name and one value per line")
            n_parameter_lines += 1
            pname, text_value = tokens[1], tokens[2]
            if pname == "unused":  # amsynth's Preset::fromString skips this name
                continue
            _set_value(values, seen, pname, text_value, source, line, bank=False)
        elif tokens[0] == "<property>":
            if len(tokens) < 2:
                raise _error(source, line, "a '<property>' line without a key",
                             "write '<property> KEY VALUE' or remove the line")
            key = tokens[1]
            rest = ln.split(None, 2)
            properties.append((key, rest[2].strip() if len(rest) > 2 else ""))
        else:
            raise _error(source, line, f"unrecognized line {_show(ln)}",
                         "expected '<parameter> NAME VALUE' or '<property> KEY VALUE'")
    if n_parameter_lines == 0:
        raise _error(source, rows[1][0], "the preset has no '<parameter>' line",
                     "add at least one '<parameter> NAME VALUE' line (amsynth's parser never "
                     "finishes reading the name without one and hangs the host)")
    missing = tuple(n for n in _NAMES if n not in seen)
    return _make_preset(name, values, seen, source, tuple(properties), missing)


def _parse_number(text_value: str, pname: str, source: str, line: int, bank: bool) -> float:
    s = text_value.rstrip() if bank else text_value.strip()
    if bank and s != s.lstrip():
        raise _error(source, line, f"space before the value {s.strip()!r} of {pname!r}",
                     "put exactly one space between name and value (amsynth's bank reader ignores "
                     "a '-' sign that does not come first)")
    if not _NUMBER.fullmatch(s):
        raise _error(source, line, f"value {text_value!r} of {pname!r} is not a number",
                     "write a decimal number such as 0.5, -12 or 1e-07")
    if bank and "E" in s:
        raise _error(source, line, f"value {text_value!r} of {pname!r} uses an uppercase 'E' exponent",
                     f"amsynth's bank reader would read it as {_amsynth_bank_float(s):g}; write a "
                     "lowercase 'e' or a plain decimal")
    x = float(s)
    if not math.isfinite(x):
        raise _error(source, line, f"value {text_value!r} of {pname!r} is not finite",
                     "write a finite number")
    return x


def _set_value(values: np.ndarray, seen: dict[str, int], pname: str, text_value: str,
               source: str, line: int, bank: bool) -> None:
    i = _INDEX.get(pname)
    if i is None:
        what = f"unknown parameter name {pname!r}"
        close = difflib.get_close_matches(pname, _NAMES, n=1) or [n for n in _NAMES if pname and pname in n]
        if close:
            what += f" (did you mean {close[0]!r}?)"
        if pname == "unused":
            what += " (amsynth skips it in single presets, but its bank reader aborts on it)"
        raise _error(source, line, what, _UNKNOWN_FIX)
    if pname in seen:
        raise _error(source, line, f"parameter {pname!r} is given twice (first on line {seen[pname]})",
                     "keep one line per parameter")
    values[i] = _parse_number(text_value, pname, source, line, bank)
    seen[pname] = line


def _make_preset(name: str, values: np.ndarray, seen: dict[str, int], source: str,
                 properties: tuple[tuple[str, str], ...], missing: tuple[str, ...]) -> Preset:
    v32 = values.astype(np.float32)
    out = (v32 < _MIN32) | (v32 > _MAX32)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        p = AMSYNTH.params[i]
        raise _error(source, seen.get(p.name), f"value {float(values[i])!r} of {p.name!r} is outside its range "
                     f"[{p.minimum:g}, {p.maximum:g}]",
                     "write a value inside the range (amsynth would clamp it silently)")
    return Preset(name, values, properties, missing)


def write_preset_text(path: str | os.PathLike, preset: Preset) -> None:
    """Write a single preset text file (``.amSynth``), atomically."""
    atomic_write_bytes(path, format_preset_text(preset).encode("utf-8", "surrogateescape"))


# ------------------------------------------------------------------------------------ banks
def parse_bank_text(data: bytes, source: str = "<bank>") -> list[Preset]:
    """Parse the bytes of a bank file (§9.2) into presets; missing parameters take defaults.

    Raises PresetError naming ``source`` and the line for: a header other than exactly
    ``amSynth\\n``, a ``<parameter>`` line before any ``<preset>``, a missing name or value, a
    value that is not a number, an unknown parameter name (``unused`` included: amsynth's bank
    reader aborts on it), an out-of-range value, a duplicate parameter, an unrecognized line,
    an unterminated last line, CR or NUL bytes, and more than 128 presets.
    """
    if data.startswith(BANK_HEADER.rstrip(b"\n") + b"\r\n"):
        raise _error(source, 1, "has Windows (CRLF) line endings",
                     "save the bank with Unix (LF) line endings, e.g. `dos2unix FILE` (amsynth would keep the "
                     "carriage returns in names and values)")
    if not data.startswith(BANK_HEADER):
        first = data.split(b"\n", 1)[0][:40]
        raise _error(source, 1, f"not an amsynth bank: the file must start with exactly 'amSynth' and a "
                     f"newline, got {first!r}",
                     "a bank's first line is 'amSynth' (a single preset starts with 'amSynth1.0preset')")
    for bad, why in ((b"\0", "a NUL byte (amsynth stops reading there)"),
                     (b"\r", "a carriage return (amsynth would keep it in names and values)")):
        pos = data.find(bad)
        if pos >= 0:
            raise _error(source, data[:pos].count(b"\n") + 1, f"contains {why}",
                         "save the bank with Unix (LF) line endings and no NUL bytes")
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    last = lines.pop()  # text after the final newline: amsynth never reads it
    if last.strip() not in ("", "EOF"):
        raise _error(source, len(lines) + 1, f"the last line {_show(last)} has no newline",
                     "amsynth ignores an unterminated last line; end the file with a newline")

    presets: list[Preset] = []
    name: str | None = None
    values = seen = None

    def finish() -> None:
        if name is not None:
            missing = tuple(n for n in _NAMES if n not in seen)
            presets.append(_make_preset(name, values, seen, source, (), missing))

    for lineno, ln in enumerate(lines[1:], start=2):
        if ln.startswith("<parameter> "):
            if name is None:
                raise _error(source, lineno, "a '<parameter>' line before any '<preset>' line",
                             "start each preset with '<preset> <name> NAME' (amsynth would write "
                             "outside its preset table)")
            pname, sep, text_value = ln[12:].partition(" ")
            i = _INDEX.get(pname)
            if i is not None and pname not in seen and _PLAIN_NUMBER.fullmatch(text_value):
                values[i] = float(text_value)  # fast path for the common, well-formed line
                seen[pname] = lineno
                continue
            if not sep or not text_value.strip():
                raise _error(source, lineno, f"no value in {_show(ln)}",
                             "write '<parameter> NAME VALUE' (amsynth ignores the line otherwise)")
            _set_value(values, seen, pname, text_value, source, lineno, bank=True)
        elif ln.startswith("<preset> <name> ") or ln.rstrip() == "<preset> <name>":
            finish()
            name = ln[len("<preset> <name> "):]
            if not name.strip():
                raise _error(source, lineno, "the preset name is missing",
                             "write a name after '<preset> <name> '")
            if len(presets) >= MAX_BANK_PRESETS:
                raise _error(source, lineno, f"more than {MAX_BANK_PRESETS} presets",
                             f"a bank holds at most {MAX_BANK_PRESETS} presets; split it into several banks")
            values = _DEFAULTS.copy()
            seen = {}
        elif ln.strip() in ("", "EOF"):
            continue  # amsynth ignores these (and keeps reading after EOF)
        else:
            raise _error(source, lineno, f"unrecognized line {_show(ln)}",
                         "expected '<preset> <name> NAME', '<parameter> NAME VALUE' or 'EOF' "
                         "(amsynth skips other lines, so later parameters would land in the "
                         "wrong preset)")
    finish()
    return presets


def read_bank(path: str | os.PathLike) -> list[Preset]:
    """Read a bank file; every preset in it, in file order (at most 128)."""
    return parse_bank_text(_read_bytes(path), str(path))


def format_bank(presets: Sequence[Preset]) -> bytes:
    """The bytes of a bank file holding ``presets`` in order (names kept byte for byte)."""
    presets = list(presets)
    if len(presets) > MAX_BANK_PRESETS:
        raise PresetError(f"{len(presets)} presets do not fit in one bank (at most {MAX_BANK_PRESETS}); "
                          "split them into several bank files")
    out = ["amSynth"]
    for k, p in enumerate(presets):
        if not isinstance(p, Preset):
            raise PresetError(f"bank entry {k} is a {type(p).__name__}, expected Preset")
        if p.properties:
            raise PresetError(
                f"bank entry {k} ({p.name!r}) has <property> lines {p.properties}, which a bank cannot "
                "hold; drop them with dataclasses.replace(preset, properties=())"
            )
        out.append("<preset> <name> " + p.name)
        out += [f"<parameter> {n} {_format_internal(v)}" for n, v in zip(_NAMES, p.internal)]
    out.append("EOF")
    return ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")


def write_bank(path: str | os.PathLike, presets: Iterable[Preset]) -> None:
    """Write a bank file atomically: all presets (none skipped, ``unused`` names included), all 41
    parameters each, ``EOF``. Raises PresetError for more than 128 presets."""
    presets = list(presets)
    try:
        data = format_bank(presets)
    except PresetError as e:
        raise PresetError(f"{path}: {e}", source=str(path)) from None
    atomic_write_bytes(path, data)


# -------------------------------------------------------------------------------------- fxp
_fx_name = _fxp.fx_name  # 28 NUL-padded bytes, at most 27 of UTF-8, never cut inside a character


def format_fxp_params(preset_or_normalized: Preset | Sequence[float] | np.ndarray,
                      name: str | None = None) -> bytes:
    """FxCk bytes: 41 normalized float32 (loaded by the host with ``setParameter``)."""
    if isinstance(preset_or_normalized, Preset):
        n = preset_or_normalized.normalized
        name = preset_or_normalized.name if name is None else name
    else:
        if name is None:
            raise PresetError("write_fxp_params: give a name when writing normalized values")
        try:
            n = AMSYNTH.check_normalized(preset_or_normalized, source=f"FxCk {name!r}")
        except ValueError as e:
            raise PresetError(str(e)) from None
        if n.shape != (N_PARAMS,):
            raise PresetError(f"FxCk {name!r}: expected {N_PARAMS} normalized values, got shape {n.shape}")
    try:
        return _fxp.format_fxck(n, name, FX_ID, n_params=N_PARAMS, param_names=_NAMES)
    except _fxp.FxpError as e:
        raise PresetError(str(e)) from None


def format_fxp_chunk(preset: Preset) -> bytes:
    """FPCh bytes: the §9.1 preset text as a NUL-terminated program chunk."""
    chunk = format_preset_text(preset).encode("utf-8", "surrogateescape") + b"\0"
    head = _FXP_COMMON.pack(b"CcnK", _FPCH_HEADER + len(chunk) - 8, b"FPCh", 1, FX_ID, 1, 1)
    return head + _fx_name(preset.name) + struct.pack(">i", len(chunk)) + chunk


def write_fxp_params(path: str | os.PathLike, preset_or_normalized: Preset | Sequence[float] | np.ndarray,
                     name: str | None = None) -> None:
    """Write an FxCk .fxp (41 normalized float32) atomically.

    Loading it with DawDreamer's ``load_preset`` renders bit-identically to ``set_parameter``
    of the same normalized values. ``name`` defaults to the preset's name (required for arrays).
    """
    atomic_write_bytes(path, format_fxp_params(preset_or_normalized, name))


def write_fxp_chunk(path: str | os.PathLike, preset: Preset) -> None:
    """Write an FPCh .fxp (preset text chunk) atomically: exact internal values, no normalized
    float round trip."""
    atomic_write_bytes(path, format_fxp_chunk(preset))


def parse_fxp(data: bytes, source: str = "<fxp>") -> Preset:
    """Parse .fxp/.fxb bytes: FxCk, FPCh or FBCh (``save_state``) made for amsynth."""

    def fail(offset: int | None, what: str, fix: str) -> PresetError:
        where = f"{source}" + (f" (byte {offset})" if offset is not None else "")
        return PresetError(f"{where}: {what}; {fix}", source=source)

    try:  # the common header and FxCk: the generic VST2 reader, with amsynth's ID and names
        common = _fxp.parse_header(data, source, FX_ID, plugin="amsynth")
        fx_magic = common.fx_magic
        if fx_magic == b"FxCk":
            name, n = _fxp.parse_fxck(data, source, n_params=N_PARAMS, param_names=_NAMES, plugin="amsynth",
                                      plugin_version="1.13", header=common)
            return Preset.from_normalized(name or Path(source).stem or "FxCk", n)
    except _fxp.FxpError as e:
        raise PresetError(str(e), source=source) from None
    if fx_magic in (b"FPCh", b"FBCh"):
        header = _FPCH_HEADER if fx_magic == b"FPCh" else _FBCH_HEADER
        if len(data) < header:
            raise fail(None, f"truncated {fx_magic.decode()}: {len(data)} bytes, the header alone is {header}",
                       "write the file again")
        (size,) = struct.unpack_from(">i", data, header - 4)
        if size <= 0 or header + size != len(data):
            state = "truncated" if size > 0 and header + size > len(data) else "inconsistent"
            raise fail(header - 4, f"{state} {fx_magic.decode()}: chunkSize {size} but "
                       f"{len(data) - header} chunk bytes follow the header", "write the file again")
        chunk = data[header:].split(b"\0", 1)[0]  # the plugin reads the chunk as a C string
        text = chunk.decode("utf-8", "surrogateescape")
        return parse_preset_text(text, source=f"{source} ({fx_magic.decode()} chunk)")
    if fx_magic == b"FxBk":
        raise fail(8, "an FxBk bank of parameter programs", "amsynth banks are .bank files or FBCh "
                   "chunks; export one program as FxCk or FPCh")
    raise fail(8, f"unknown .fxp kind {fx_magic!r}", "expected FxCk, FPCh or FBCh")


def read_fxp(path: str | os.PathLike) -> Preset:
    """Read an FxCk, FPCh or FBCh (DawDreamer ``save_state``) file made for amsynth.

    FxCk values go through the plugin's normalized -> internal float32 mapping; chunk presets
    keep their exact internal values, and parameters missing from a chunk take defaults
    (listed in ``Preset.missing``; the plugin would keep its current values).
    """
    return parse_fxp(_read_bytes(path), str(path))


# ------------------------------------------------------------------------------- dispatch
def read_preset_file(path: str | os.PathLike, index: int | None = None) -> Preset:
    """Read one preset from a bank, a single preset text or an .fxp, recognized by content.

    Args:
        path: the file.
        index: 0-based preset index, required for banks holding more than one preset.
    """
    source = str(path)
    data = _read_bytes(path)
    if data.startswith(BANK_HEADER) or data.startswith(BANK_HEADER.rstrip(b"\n") + b"\r\n"):
        presets = parse_bank_text(data, source)
        if not presets:
            raise PresetError(f"{source}: the bank holds no presets (only its 'amSynth' header); add a "
                              "'<preset> <name> NAME' section or pick another file", source=source)
        if index is None:
            if len(presets) == 1:
                return presets[0]
            shown = ", ".join(f"{k}: {p.name.strip()!r}" for k, p in enumerate(presets[:5]))
            more = ", ..." if len(presets) > 5 else ""
            raise PresetError(
                f"{source}: the bank holds {len(presets)} presets ({shown}{more}); pick one with "
                f"--index K (0-based, 0..{len(presets) - 1})", source=source)
        if not 0 <= index < len(presets):
            raise PresetError(f"{source}: --index {index} is out of range; the bank holds {len(presets)} "
                              f"presets (0..{len(presets) - 1})", source=source)
        return presets[index]
    if index not in (None, 0):
        raise PresetError(f"{source}: --index {index} given, but the file holds a single preset; "
                          "drop --index", source=source)
    if data.startswith(b"CcnK"):
        return parse_fxp(data, source)
    if data.lstrip().startswith(PRESET_HEADER.encode()):
        return parse_preset_text(data.decode("utf-8", "surrogateescape"), source)
    raise PresetError(
        f"{source}: not an amsynth preset; expected a bank ('amSynth' first line), a preset text "
        f"('amSynth1.0preset' first line) or a VST2 .fxp ('CcnK'), got {data[:16]!r}", source=source)


# ----------------------------------------------------------------------------- factory set
@dataclass(frozen=True, eq=False)
class FactoryPresets:
    """All presets of the factory banks, in amsynth's order (bank files by byte order).

    Attributes:
        names: preset names (byte for byte as in the banks).
        bank_files: path of the bank file of each preset.
        bank_indices: int ``[N]``, index of each preset within its bank.
        internal: float64 ``[N, 41]`` internal values (read-only).
        normalized: float64 ``[N, 41]`` normalized values as the plugin reports them (read-only).
        present: bool ``[N, 41]``: the bank set the value (False: an old bank lacking the
            parameter; the default was used).
    """

    names: tuple[str, ...]
    bank_files: tuple[str, ...]
    bank_indices: np.ndarray
    internal: np.ndarray
    normalized: np.ndarray
    present: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def preset(self, i: int) -> Preset:
        return Preset(self.names[i], self.internal[i])


def load_factory_banks(directory: str | os.PathLike = FACTORY_BANKS_DIR) -> FactoryPresets:
    """Every preset in the factory bank folder (3482 for amsynth 1.13.2), cached per process.

    Files without the bank header are skipped, as amsynth does. Raises FileNotFoundError
    naming the fix when the folder is missing or holds no bank.
    """
    return _load_factory_banks(os.path.abspath(os.fspath(directory)))


@functools.lru_cache(maxsize=4)
def _load_factory_banks(directory: str) -> FactoryPresets:
    fix = "install amsynth (`sudo apt-get install amsynth`, or run our `bash scripts/setup.sh`)"
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"amsynth factory banks not found: {directory} is missing; {fix}")
    names: list[str] = []
    files: list[str] = []
    indices: list[int] = []
    rows: list[np.ndarray] = []
    present: list[np.ndarray] = []
    for entry in sorted(os.listdir(directory), key=os.fsencode):
        path = os.path.join(directory, entry)
        if not os.path.isfile(path):
            continue
        data = _read_bytes(path)
        if not data.startswith(BANK_HEADER):
            continue
        for k, p in enumerate(parse_bank_text(data, path)):
            names.append(p.name)
            files.append(path)
            indices.append(k)
            rows.append(p.internal)
            present.append(np.array([n not in p.missing for n in _NAMES]))
    if not rows:
        raise FileNotFoundError(f"no amsynth bank files in {directory}; {fix}")
    internal = np.stack(rows)
    normalized = _internal_to_normalized(internal)
    bank_indices = np.asarray(indices, dtype=np.int64)
    present_arr = np.stack(present)
    for a in (internal, normalized, bank_indices, present_arr):
        a.setflags(write=False)
    return FactoryPresets(tuple(names), tuple(files), bank_indices, internal, normalized, present_arr)


# ------------------------------------------------------------------------------------ files
def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()

