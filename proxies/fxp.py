"""VST2 ``.fxp`` parameter programs (``FxCk``) for any plugin: strict reader, exact writer.

Layout (VST2 SDK ``fxProgram``, every field big-endian)::

    offset  size  field
         0     4  chunkMagic   b"CcnK"
         4     4  byteSize     file size - 8 (JUCE also writes 0; both are accepted)
         8     4  fxMagic      b"FxCk" (parameters) / b"FPCh" (opaque chunk) / b"FxBk", b"FBCh" (banks)
        12     4  version      0 or 1
        16     4  fxID         the plugin's 4-character unique ID (amsynth b"amsy", Nekobi b"DNek")
        20     4  fxVersion    the plugin's version (informational)
        24     4  numParams    parameter count
        28    28  prgName      NUL-padded program name (at most 27 bytes kept)
        56  4*n   params       n normalized float32 values in [0, 1], plugin index order

The first 28 bytes (through ``numParams``) are common to every ``.fxp``/``.fxb`` kind;
:func:`parse_header` checks them, :func:`parse_fxck` the FxCk body. Chunk kinds (``FPCh``,
``FBCh``) are plugin-specific and stay with the plugin's own package (amsynth's in
:mod:`proxies.amsynth.presets`).

Hosts are lenient where we are strict: JUCE (DawDreamer ``load_preset``) loads an FxCk with
another plugin's ID, or with fewer parameters than the plugin has (keeping the current values
of the rest), and plugins clamp values outside [0, 1] silently. Each of those is an
:class:`FxpError` here, whose message names the file, the byte offset where there is one,
what is wrong and the fix.

Loading an FxCk written here with DawDreamer's ``load_preset`` sets exactly the written float32
values (``set_parameter`` of each), so it renders like the same normalized values sent directly.
"""

from __future__ import annotations

import os
import struct
from typing import NamedTuple, Sequence

import numpy as np

from proxies.files import atomic_write_bytes

__all__ = [
    "COMMON",
    "FXCK_HEADER",
    "FxpError",
    "FxpHeader",
    "NAME_LEN",
    "format_fxck",
    "fx_name",
    "parse_fxck",
    "parse_header",
    "plugin_id_bytes",
    "plugin_id_of",
    "read_fxck",
    "write_fxck",
]

COMMON = struct.Struct(">4si4si4sii")  # chunkMagic byteSize fxMagic version fxID fxVersion numParams
FXCK_HEADER = 56  # common 28 + prgName[28]
NAME_LEN = 28


class FxpError(ValueError):
    """A bad .fxp file or value: the message names the file, the byte offset (where useful),
    what was wrong and the fix."""

    def __init__(self, message: str, source: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.offset = offset


def _fail(source: str, offset: int | None, what: str, fix: str) -> FxpError:
    where = source + (f" (byte {offset})" if offset is not None else "")
    return FxpError(f"{where}: {what}; {fix}", source=source, offset=offset)


class FxpHeader(NamedTuple):
    """The common 28 bytes of a ``.fxp`` / ``.fxb`` (see the module docstring)."""

    byte_size: int
    fx_magic: bytes
    version: int
    fx_id: bytes
    fx_version: int
    count: int


def plugin_id_bytes(plugin_id: str | bytes | None) -> bytes | None:
    """A plugin's 4-character VST2 ID as bytes (None/empty: unknown); a clear error otherwise."""
    if plugin_id is None or plugin_id in ("", b""):
        return None
    raw = plugin_id.encode("latin-1") if isinstance(plugin_id, str) else bytes(plugin_id)
    if len(raw) != 4:
        raise FxpError(f"plugin ID {plugin_id!r} must be exactly 4 characters (a VST2 unique ID such as 'DNek')")
    return raw


def fx_name(name: str) -> bytes:
    """The 28-byte NUL-padded name field: at most 27 bytes of UTF-8, never cut inside a character."""
    raw = str(name).encode("utf-8", "surrogateescape")[: NAME_LEN - 1]
    while raw:
        try:
            raw.decode("utf-8")
            break
        except UnicodeDecodeError:
            raw = raw[:-1]
    return raw.ljust(NAME_LEN, b"\0")


def parse_header(data: bytes, source: str = "<fxp>", plugin_id: str | bytes | None = None,
                 plugin: str = "the plugin") -> FxpHeader:
    """Check and unpack the common header.

    Checks, in order: length (``truncated``), ``CcnK`` magic, the plugin ID (when ``plugin_id`` is
    given), the format version, and that ``byteSize`` (when not 0) matches the file length.
    ``plugin`` names the plugin in messages.
    """
    want_id = plugin_id_bytes(plugin_id)
    if len(data) < COMMON.size:
        raise _fail(source, None, f"truncated: {len(data)} bytes, a VST2 .fxp header needs {COMMON.size}",
                    "the file is incomplete; write it again")
    magic, byte_size, fx_magic, version, fx_id, fx_version, count = COMMON.unpack_from(data)
    if magic != b"CcnK":
        raise _fail(source, 0, f"wrong magic {magic!r}, expected b'CcnK'", "this is not a VST2 .fxp/.fxb file")
    if want_id is not None and fx_id != want_id:
        raise _fail(source, 16, f"made for the plugin with ID {fx_id!r}, not {plugin} ({want_id!r})",
                    f"use a preset saved from {plugin}")
    if not 0 <= version <= 1:
        raise _fail(source, 12, f"format version {version} (hosts read versions 0 and 1)", "re-save the preset")
    if byte_size not in (0, len(data) - 8):
        raise _fail(source, 4, f"byteSize field says {byte_size + 8} bytes but the file has {len(data)}",
                    "the file is truncated or has extra bytes; write it again")
    return FxpHeader(byte_size, fx_magic, version, fx_id, fx_version, count)


def _check_values(n: np.ndarray, source: str, names: Sequence[str] | None, offset0: int | None) -> None:
    bad = ~(np.isfinite(n) & (n >= 0) & (n <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        label = repr(names[i]) if names is not None and i < len(names) else str(i)
        what = (f"parameter {label} has normalized value {float(n[i])!r}, "
                + ("outside [0, 1]" if np.isfinite(n[i]) else "which is not finite"))
        raise _fail(source, None if offset0 is None else offset0 + 4 * i, what,
                    "normalized values must lie in [0, 1] (the plugin would clamp it silently)")


def parse_fxck(data: bytes, source: str = "<fxp>", *, plugin_id: str | bytes | None = None,
               n_params: int | None = None, param_names: Sequence[str] | None = None,
               plugin: str = "the plugin", plugin_version: str = "",
               header: FxpHeader | None = None) -> tuple[str, np.ndarray]:
    """Parse FxCk bytes: ``(name, normalized float64 [n])``.

    Args:
        data: the file's bytes.
        source: the file name, for messages.
        plugin_id: the plugin's 4-character ID; None skips the check.
        n_params: the plugin's parameter count; None accepts any count.
        param_names: names used in messages about values (else the index).
        plugin, plugin_version: how messages name the plugin (``"amsynth"``, ``"1.13"``).
        header: an already parsed :func:`parse_header` (skips re-checking it).

    ``name`` is the program name as stored (possibly empty). Raises :class:`FxpError`.
    """
    h = header if header is not None else parse_header(data, source, plugin_id, plugin)
    if h.fx_magic != b"FxCk":
        if h.fx_magic in (b"FPCh", b"FBCh"):
            raise _fail(source, 8, f"an opaque {h.fx_magic.decode()} chunk, not an FxCk parameter program",
                        f"only {plugin} itself can read its chunks; save the preset as an FxCk .fxp")
        if h.fx_magic == b"FxBk":
            raise _fail(source, 8, "an FxBk bank of parameter programs", "export one program as an FxCk .fxp")
        raise _fail(source, 8, f"unknown .fxp kind {h.fx_magic!r}", "expected an FxCk parameter program")
    if n_params is not None and h.count != n_params:
        saved = f"{plugin} {plugin_version}".strip()
        raise _fail(source, 24, f"FxCk with {h.count} parameters, {plugin} has {n_params}",
                    f"use a preset saved from {saved}")
    if h.count < 0:
        raise _fail(source, 24, f"FxCk with {h.count} parameters", "the file is corrupt; write it again")
    need = FXCK_HEADER + 4 * h.count
    if len(data) != need:
        raise _fail(source, None, f"FxCk of {len(data)} bytes, expected {need} "
                    f"({'truncated' if len(data) < need else 'extra bytes at the end'})", "write the file again")
    name = data[28:FXCK_HEADER].split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    n = np.frombuffer(data, dtype=">f4", count=h.count, offset=FXCK_HEADER).astype(np.float64)
    _check_values(n, source, param_names, FXCK_HEADER)
    return name, n


def read_fxck(path: str | os.PathLike, **kwargs) -> tuple[str, np.ndarray]:
    """Read an FxCk file: ``(name, normalized float64 [n])``; keywords as :func:`parse_fxck`.

    A missing file raises FileNotFoundError; every bad content an :class:`FxpError`."""
    with open(path, "rb") as f:
        data = f.read()
    return parse_fxck(data, os.fspath(path), **kwargs)


def format_fxck(normalized: Sequence[float] | np.ndarray, name: str, plugin_id: str | bytes | None, *,
                fx_version: int = 1, n_params: int | None = None,
                param_names: Sequence[str] | None = None) -> bytes:
    """FxCk bytes of ``normalized [n]`` (rounded to float32) named ``name``.

    ``plugin_id`` None/empty writes four NUL bytes (hosts do not check it; our reader then needs
    ``plugin_id=None``). Values must be finite and in [0, 1]; ``n_params`` checks the count.
    """
    source = f"FxCk {name!r}"
    n = np.asarray(normalized, dtype=np.float64)
    if n.ndim != 1:
        raise FxpError(f"{source}: expected a 1-D array of normalized values, got shape {n.shape}")
    if n_params is not None and n.shape[0] != n_params:
        raise FxpError(f"{source}: expected {n_params} normalized values, got {n.shape[0]}")
    _check_values(n, source, param_names, None)
    fid = plugin_id_bytes(plugin_id) or b"\0\0\0\0"
    body = n.astype(">f4").tobytes()
    head = COMMON.pack(b"CcnK", FXCK_HEADER + len(body) - 8, b"FxCk", 1, fid, int(fx_version), n.shape[0])
    return head + fx_name(name) + body


def write_fxck(path: str | os.PathLike, normalized: Sequence[float] | np.ndarray, name: str,
               plugin_id: str | bytes | None, **kwargs) -> str:
    """Write an FxCk .fxp atomically (keywords as :func:`format_fxck`); returns the path."""
    data = format_fxck(normalized, name, plugin_id, **kwargs)
    atomic_write_bytes(path, data)
    return os.fspath(path)


def plugin_id_of(data: bytes) -> str:
    """The 4-character plugin ID in any VST2 ``.fxp``/``.fxb`` (e.g. DawDreamer ``save_state`` of a
    VST2 plugin); ``""`` when ``data`` is not one (VST3 state) or the ID is not printable."""
    if len(data) < COMMON.size or data[:4] != b"CcnK":
        return ""
    fid = data[16:20]
    text = fid.decode("latin-1")
    return text if text.isprintable() and fid != b"\0\0\0\0" else ""
