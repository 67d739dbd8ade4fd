"""DX7 voice files: ``.syx`` banks and single voices, raw banks, hexter's voice files.

Formats (Yamaha DX7 MIDI data format; ``shared/dexed/README.md`` §2.2, §3):

* **32-voice bulk dump** (``.syx``, what the Dexed plugin loads), 4104 bytes:
  ``F0 43 0n 09 20 00`` + 4096 bytes (32 packed 128-byte VMEM voices) + checksum + ``F7``;
  ``n`` is the MIDI channel (0..15), ``20 00`` the byte count 4096 in two 7-bit bytes, and the
  checksum ``(-sum(payload)) & 0x7F``. A file may hold several dumps (and other sysex
  messages, which are skipped).
* **Single voice** (``.syx``), 163 bytes: ``F0 43 0n 00 01 1B`` + 155 VCED bytes + checksum +
  ``F7`` (byte count 155). The Dexed plugin does not load a bare single-voice file, so
  :func:`write_preset` writes a bank as the primary file and the single voice beside it.
* **Raw** (``.dx7``, ``.bin``, ...): packed 128-byte VMEM voices with no framing: 4096 bytes
  is one bank; hexter's ``/usr/share/hexter/*.dx7`` are such files of 128, 96, 96, 48 and 64
  voices (16384, 12288, 12288, 6144 and 8192 bytes: whole and half banks, not always a
  multiple of 4096).

VMEM packing (per operator, 17 bytes, OP6 first: bytes 0..10 as in the VCED; 11 =
``lc | rc << 2``; 12 = ``rs | det << 3``; 13 = ``ams | kvs << 2``; 14 = OL; 15 =
``mode | coarse << 1``; 16 = fine. Globals: 102..109 pitch EG; 110 algorithm; 111 =
``fb | oks << 3``; 112..115 LFO speed, delay, PMD, AMD; 116 = ``sync | wave << 1 | pms << 4``;
117 transpose; 118..127 name).

Values live in the VCED integer space of :mod:`proxies.dexed.spec` (parameter ``i`` = VCED byte
``i``, names included). Reading is **strict** by default: a wrong checksum, a value outside its
DX7 range, a set bit that the format leaves 0, a truncated message or stray bytes raise
:class:`PresetError` naming the file, the place and the fix. ``strict=False`` loads such files
the way dexed-py's ``Patch`` does: the unused bits masked, values clamped into range, checksums
and trailing bytes ignored. Strictly read files are rewritten byte for byte (all of hexter's
432 voices, tested). Names are 10 7-bit ASCII characters, kept code for code. Every writer
writes atomically (:func:`proxies.files.atomic_write_bytes`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from proxies.dexed.spec import (DEXED, INIT_VOICE, NAME_LENGTH, NAME_OFFSET, VCED_SIZE, normalized_from_vced,
                                vced_from_normalized)
from proxies.files import atomic_write_bytes

__all__ = [
    "BANK_PAYLOAD",
    "BANK_SYSEX_SIZE",
    "BANK_VOICES",
    "HEXTER_DIR",
    "DX7_ROM_FILE",
    "HexterVoices",
    "PresetError",
    "RAW_SUFFIXES",
    "VMEM_SIZE",
    "VOICE_SYSEX_SIZE",
    "Voice",
    "checksum",
    "format_bank",
    "format_raw",
    "format_voice",
    "hexter_corpus",
    "load_hexter",
    "pack_voice",
    "parse_voices",
    "read_preset",
    "read_voice",
    "read_voices",
    "single_voice_path",
    "unpack_voice",
    "write_bank",
    "write_preset",
    "write_raw",
    "write_voice",
]

BANK_VOICES = 32
VMEM_SIZE = 128
BANK_PAYLOAD = BANK_VOICES * VMEM_SIZE  # 4096
BANK_SYSEX_SIZE = 6 + BANK_PAYLOAD + 2  # 4104
VOICE_SYSEX_SIZE = 6 + VCED_SIZE + 2  # 163
RAW_SUFFIXES = (".dx7", ".bin", ".vmem")
SYSEX_SUFFIXES = (".syx",)
HEXTER_DIR = "/usr/share/hexter"
DX7_ROM_FILE = "dx7_roms.dx7"
SINGLE_VOICE_SUFFIX = ".voice.syx"

_YAMAHA = 0x43
_FORMAT_VOICE, _FORMAT_BANK = 0x00, 0x09
_COUNT = {_FORMAT_VOICE: (0x01, 0x1B), _FORMAT_BANK: (0x20, 0x00)}
_SIZE = {_FORMAT_VOICE: VOICE_SYSEX_SIZE, _FORMAT_BANK: BANK_SYSEX_SIZE}
_NAMES = DEXED.names
_MIN = DEXED.minimum.astype(np.int64)
_MAX = DEXED.maximum.astype(np.int64)
_INSTALL_HEXTER = "install hexter's voice banks with `sudo apt-get install hexter`"
_LENIENT = "proxies.dexed.presets.read_voices(path, strict=False)"


class PresetError(ValueError):
    """A bad DX7 file or voice: the message names the file, the place (byte / voice) and the fix."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


def _fail(source: str, where: str | None, what: str, fix: str) -> PresetError:
    place = f"{source} ({where})" if where else source
    return PresetError(f"{place}: {what}; {fix}", source=source)


# ------------------------------------------------------------------------------------ voices
@dataclass(frozen=True, eq=False)
class Voice:
    """One DX7 voice.

    Attributes:
        vced: int32 ``[155]``, the VCED bytes (parameter ``i`` of :data:`proxies.dexed.spec.DEXED`
            is byte ``i``; the last 10 are the name), read-only, inside the native ranges.
    """

    vced: np.ndarray

    def __post_init__(self) -> None:
        v = _check_vced(self.vced, "voice")
        v.setflags(write=False)
        object.__setattr__(self, "vced", v)

    @property
    def name(self) -> str:
        """The 10-character name, code for code (trailing spaces kept)."""
        return bytes(self.vced[NAME_OFFSET:].astype(np.uint8)).decode("ascii")

    @property
    def normalized(self) -> np.ndarray:
        """float64 ``[155]`` normalized values."""
        return normalized_from_vced(self.vced)

    def with_name(self, name: str) -> "Voice":
        """A copy named ``name`` (cut / padded with spaces to 10 characters; non-ASCII -> ``?``)."""
        v = self.vced.copy()
        v[NAME_OFFSET:] = _name_codes(name)
        return Voice(v)

    @classmethod
    def from_normalized(cls, normalized, name: str | None = None) -> "Voice":
        """From normalized values ``[155]`` (snapped to the integer grid); ``name`` replaces the
        name characters when given."""
        try:
            v = vced_from_normalized(np.asarray(normalized, dtype=np.float64), source="normalized voice")
        except ValueError as e:
            raise PresetError(str(e)) from None
        if v.shape != (VCED_SIZE,):
            raise PresetError(f"normalized voice: expected {VCED_SIZE} values, got shape {v.shape}")
        voice = cls(v)
        return voice if name is None else voice.with_name(name)

    @classmethod
    def init(cls, name: str | None = None) -> "Voice":
        """The DX7 init voice (``INIT VOICE``: OP1 a full-level sine)."""
        voice = cls(INIT_VOICE.copy())
        return voice if name is None else voice.with_name(name)


def _name_codes(name: str) -> np.ndarray:
    if not isinstance(name, str):
        raise PresetError(f"a voice name must be a string, got {type(name).__name__}")
    text = "".join(c if ord(c) < 128 else "?" for c in name)[:NAME_LENGTH].ljust(NAME_LENGTH)
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int32)


def _check_vced(vced, source: str) -> np.ndarray:
    v = np.asarray(vced)
    if v.shape != (VCED_SIZE,):
        raise PresetError(f"{source}: expected {VCED_SIZE} VCED values, got shape {v.shape}", source=source)
    if v.dtype.kind not in "iu":
        f = np.asarray(v, dtype=np.float64)
        if not (np.all(np.isfinite(f)) and np.all(f == np.round(f))):
            raise PresetError(f"{source}: VCED values must be integers", source=source)
    v = np.asarray(v, dtype=np.int64)
    bad = (v < _MIN) | (v > _MAX)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PresetError(f"{source}: {_NAMES[i]} (VCED byte {i}) is {int(v[i])}, outside its range "
                          f"{_MIN[i]}..{_MAX[i]}", source=source)
    return v.astype(np.int32)


def _as_voice(x, source: str) -> Voice:
    return x if isinstance(x, Voice) else Voice(_check_vced(x, source))


# --------------------------------------------------------------------------- VMEM <-> VCED
def pack_voice(voice: Voice | np.ndarray) -> bytes:
    """VCED ``[155]`` -> the 128-byte packed VMEM voice of a bank."""
    v = _as_voice(voice, "voice").vced.astype(np.int64)
    p = np.zeros(VMEM_SIZE, dtype=np.int64)
    for k in range(6):
        o, s = 21 * k, 17 * k
        p[s:s + 11] = v[o:o + 11]
        p[s + 11] = v[o + 11] | (v[o + 12] << 2)
        p[s + 12] = v[o + 13] | (v[o + 20] << 3)
        p[s + 13] = v[o + 14] | (v[o + 15] << 2)
        p[s + 14] = v[o + 16]
        p[s + 15] = v[o + 17] | (v[o + 18] << 1)
        p[s + 16] = v[o + 19]
    p[102:111] = v[126:135]
    p[111] = v[135] | (v[136] << 3)
    p[112:116] = v[137:141]
    p[116] = v[141] | (v[142] << 1) | (v[143] << 4)
    p[117:128] = v[144:155]
    return bytes(p.astype(np.uint8))


def _unpack_raw(p: np.ndarray) -> np.ndarray:
    """Field extraction with every bit of each field kept (no masking, no range check): int64 [155]."""
    v = np.zeros(VCED_SIZE, dtype=np.int64)
    for k in range(6):
        o, s = 21 * k, 17 * k
        v[o:o + 11] = p[s:s + 11]
        v[o + 11], v[o + 12] = p[s + 11] & 3, (p[s + 11] >> 2) & 3
        v[o + 13], v[o + 20] = p[s + 12] & 7, (p[s + 12] >> 3) & 15
        v[o + 14], v[o + 15] = p[s + 13] & 3, (p[s + 13] >> 2) & 7
        v[o + 16] = p[s + 14]
        v[o + 17], v[o + 18] = p[s + 15] & 1, (p[s + 15] >> 1) & 31
        v[o + 19] = p[s + 16]
    v[126:135] = p[102:111]
    v[134] = p[110] & 31
    v[135], v[136] = p[111] & 7, (p[111] >> 3) & 1
    v[137:141] = p[112:116]
    v[141], v[142], v[143] = p[116] & 1, (p[116] >> 1) & 7, (p[116] >> 4) & 7
    v[144:155] = p[117:128]
    return v


def unpack_voice(vmem: bytes, source: str = "<vmem>", strict: bool = True) -> Voice:
    """A 128-byte packed VMEM voice -> :class:`Voice`.

    Strict: raises PresetError for a value outside its DX7 range or a bit the format leaves 0;
    ``strict=False`` masks stray bits and clamps values into range (dexed-py ``Patch`` style).
    """
    p = np.frombuffer(bytes(vmem), dtype=np.uint8).astype(np.int64)
    if p.shape != (VMEM_SIZE,):
        raise PresetError(f"{source}: a packed voice is {VMEM_SIZE} bytes, got {p.shape[0]}", source=source)
    if not strict:
        v = _unpack_raw(p & 0x7F)
        return Voice(np.clip(v, _MIN, _MAX).astype(np.int32))
    v = _unpack_raw(p)
    bad = (v < _MIN) | (v > _MAX)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(source, None, f"{_NAMES[i]} is {int(v[i])}, outside its DX7 range {_MIN[i]}..{_MAX[i]}",
                    "the file is corrupt or not a DX7 voice file; load it with "
                    f"{_LENIENT} to clamp such values into range (as Dexed does), then check the sound")
    repacked = np.frombuffer(pack_voice(v), dtype=np.uint8)
    stray = np.flatnonzero(repacked != p)
    if stray.size:
        b = int(stray[0])
        raise _fail(source, f"packed byte {b}", f"0x{int(p[b]):02X} has bits set that the DX7 format leaves 0 "
                    f"(expected 0x{int(repacked[b]):02X})",
                    f"the file is corrupt or not a DX7 voice file; load it with {_LENIENT} to ignore those bits")
    return Voice(v.astype(np.int32))


def checksum(data: bytes) -> int:
    """The Yamaha sysex checksum of a payload: ``(-sum(data)) & 0x7F``."""
    return (-sum(data)) & 0x7F


# ------------------------------------------------------------------------------------ parse
def _parse_sysex(data: bytes, source: str, strict: bool) -> list[Voice]:
    voices: list[Voice] = []
    pos, seen = 0, 0
    n = len(data)
    while pos < n:
        if data[pos] != 0xF0:
            if not strict:
                break
            raise _fail(source, f"byte {pos}", f"{n - pos} stray byte(s) after the last sysex message "
                        f"(0x{data[pos]:02X} where F0 should start a message)",
                        f"cut the file after the final F7, or load it with {_LENIENT}")
        head = data[pos:pos + 6]
        fmt = head[3] if len(head) > 3 else None
        is_dump = (len(head) >= 4 and head[1] == _YAMAHA and head[2] < 0x10 and fmt in _SIZE)
        if not is_dump:
            end = data.find(b"\xF7", pos + 1)
            if end < 0:
                raise _fail(source, f"byte {pos}", "a sysex message without its closing F7 (truncated)",
                            "the file is incomplete; get a complete copy")
            pos, seen = end + 1, seen + 1  # another message (e.g. a device reply): skipped
            continue
        size = _SIZE[fmt]
        kind = "32-voice bulk dump" if fmt == _FORMAT_BANK else "single-voice dump"
        if n - pos < size:
            raise _fail(source, f"byte {pos}", f"truncated {kind}: it needs {size} bytes, the file ends after "
                        f"{n - pos}", "the file is incomplete; get a complete copy of the bank")
        msg = data[pos:pos + size]
        if tuple(msg[4:6]) != _COUNT[fmt]:
            raise _fail(source, f"byte {pos + 4}", f"{kind} with byte count {msg[4]:02X} {msg[5]:02X}, expected "
                        f"{_COUNT[fmt][0]:02X} {_COUNT[fmt][1]:02X}", "the file is corrupt or not a DX7 dump")
        if msg[-1] != 0xF7:
            hint = "truncated or with extra bytes" if 0xF7 in msg[6:] else "without its closing F7"
            raise _fail(source, f"byte {pos + size - 1}", f"{kind} {hint} (0x{msg[-1]:02X} where F7 should end "
                        f"it, {size} bytes in)", "the file is corrupt; get a complete copy")
        payload = msg[6:-2]
        high = [i for i, b in enumerate(payload) if b & 0x80]
        if high:
            raise _fail(source, f"byte {pos + 6 + high[0]}", f"data byte 0x{payload[high[0]]:02X} has bit 7 set "
                        "inside the dump (sysex data bytes are 7-bit)", "the dump is truncated or corrupt")
        if strict and checksum(payload) != msg[-2]:
            raise _fail(source, f"byte {pos + size - 2}", f"{kind} checksum is 0x{msg[-2]:02X}, the data sum to "
                        f"0x{checksum(payload):02X}", "the data are corrupt (or the checksum was not updated "
                        f"after an edit); load it with {_LENIENT} to accept it, as Dexed does with a warning, "
                        "and re-save it")
        if fmt == _FORMAT_BANK:
            for k in range(BANK_VOICES):
                voices.append(unpack_voice(payload[k * VMEM_SIZE:(k + 1) * VMEM_SIZE],
                                           f"{source} (dump at byte {pos}, voice {k})", strict))
        else:
            voices.append(_vced_message_voice(payload, f"{source} (voice at byte {pos})", strict))
        pos += size
        seen += 1
    if not voices:
        raise _fail(source, None, f"no DX7 voice data in {seen} sysex message(s)",
                    "expected a 32-voice bulk dump (F0 43 0n 09 20 00 ...) or a single-voice dump "
                    "(F0 43 0n 00 01 1B ...)")
    return voices


def _vced_message_voice(payload: bytes, source: str, strict: bool) -> Voice:
    v = np.frombuffer(payload, dtype=np.uint8).astype(np.int64)
    if strict:
        return Voice(_check_vced(v, source))
    v = v.copy()
    masks = {134: 0x1F, 135: 7, 136: 1, 141: 1, 142: 7, 143: 7}
    for k in range(6):
        masks.update({21 * k + 11: 3, 21 * k + 12: 3, 21 * k + 13: 7, 21 * k + 14: 3, 21 * k + 15: 7,
                      21 * k + 17: 1, 21 * k + 18: 31, 21 * k + 20: 15})
    for i, m in masks.items():
        v[i] &= m
    return Voice(np.clip(v, _MIN, _MAX).astype(np.int32))


def parse_voices(data: bytes, source: str = "<data>", strict: bool = True) -> list[Voice]:
    """Every voice in ``data``, recognised by content: sysex (bank dumps, single voices) when it
    starts with F0, else raw packed voices (a multiple of 128 bytes)."""
    data = bytes(data)
    if not data:
        raise _fail(source, None, "the file is empty", "give a DX7 .syx bank or voice, or a raw bank")
    if data[0] == 0xF0:
        return _parse_sysex(data, source, strict)
    if len(data) % VMEM_SIZE:
        raise _fail(source, None, f"{len(data)} bytes is neither a sysex file (first byte 0x{data[0]:02X}, not "
                    f"F0) nor raw packed voices (a multiple of {VMEM_SIZE} bytes; a raw bank is {BANK_PAYLOAD})",
                    "give a DX7 .syx bank (4104 bytes), a single-voice .syx (163 bytes) or a raw bank; a "
                    "truncated raw file has lost voices")
    return [unpack_voice(data[k:k + VMEM_SIZE], f"{source} (voice {k // VMEM_SIZE})", strict)
            for k in range(0, len(data), VMEM_SIZE)]


def read_voices(path: str | os.PathLike, strict: bool = True) -> list[Voice]:
    """Every voice of a DX7 file (a bank, several banks, a single voice, raw / hexter banks)."""
    return parse_voices(_read_bytes(path), os.fspath(path), strict)


def read_voice(path: str | os.PathLike, index: int | None = None, strict: bool = True) -> Voice:
    """One voice of a file: ``index`` (0-based) picks one of several; it may be left out when the
    file holds a single voice."""
    source = os.fspath(path)
    voices = read_voices(path, strict)
    if index is None:
        if len(voices) == 1:
            return voices[0]
        shown = ", ".join(f"{k}: {v.name.rstrip()!r}" for k, v in enumerate(voices[:5]))
        raise PresetError(f"{source}: the file holds {len(voices)} voices ({shown}, ...); pick one with --index K "
                          f"(0-based, 0..{len(voices) - 1})", source=source)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(voices):
        raise PresetError(f"{source}: --index {index!r} is out of range; the file holds {len(voices)} voices "
                          f"(0..{len(voices) - 1})", source=source)
    return voices[int(index)]


def read_preset(path: str | os.PathLike, index: int | None = None) -> tuple[str, np.ndarray]:
    """``(name, normalized [155])`` of one voice (the :class:`proxies.synth.PresetFormats` reader);
    the name without trailing spaces."""
    v = read_voice(path, index)
    return v.name.rstrip(" "), v.normalized


# ------------------------------------------------------------------------------------ write
def _channel(channel: int) -> int:
    if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= channel <= 15:
        raise PresetError(f"MIDI channel must be 0..15 (the n of F0 43 0n), got {channel!r}")
    return int(channel)


def format_voice(voice: Voice | np.ndarray, channel: int = 0) -> bytes:
    """The 163-byte single-voice dump ``F0 43 0n 00 01 1B <155 VCED> <checksum> F7``."""
    payload = bytes(_as_voice(voice, "voice").vced.astype(np.uint8))
    return bytes([0xF0, _YAMAHA, _channel(channel), _FORMAT_VOICE, *_COUNT[_FORMAT_VOICE]]) + payload + bytes(
        [checksum(payload), 0xF7])


def format_bank(voices: Sequence[Voice | np.ndarray], channel: int = 0) -> bytes:
    """32-voice bulk dumps of ``voices``: one 4104-byte dump per 32 voices, the last one padded
    with init voices (1..32 voices give exactly one dump)."""
    voices = [_as_voice(v, f"voice {k}") for k, v in enumerate(voices)]
    if not voices:
        raise PresetError("a bank needs at least one voice")
    ch = _channel(channel)
    out = bytearray()
    for start in range(0, len(voices), BANK_VOICES):
        chunk = voices[start:start + BANK_VOICES]
        chunk += [Voice.init()] * (BANK_VOICES - len(chunk))
        payload = b"".join(pack_voice(v) for v in chunk)
        out += bytes([0xF0, _YAMAHA, ch, _FORMAT_BANK, *_COUNT[_FORMAT_BANK]]) + payload
        out += bytes([checksum(payload), 0xF7])
    return bytes(out)


def format_raw(voices: Sequence[Voice | np.ndarray]) -> bytes:
    """Raw packed voices, 128 bytes each, no framing and no padding (32 voices = a raw bank)."""
    voices = [_as_voice(v, f"voice {k}") for k, v in enumerate(voices)]
    if not voices:
        raise PresetError("a raw bank needs at least one voice")
    return b"".join(pack_voice(v) for v in voices)


def write_voice(path: str | os.PathLike, voice: Voice | np.ndarray, channel: int = 0) -> None:
    """Write a 163-byte single-voice ``.syx`` atomically."""
    atomic_write_bytes(path, format_voice(voice, channel))


def write_bank(path: str | os.PathLike, voices: Iterable[Voice | np.ndarray], channel: int = 0) -> None:
    """Write ``voices`` as 32-voice bulk dump(s) (``.syx``) atomically (see :func:`format_bank`)."""
    try:
        data = format_bank(list(voices), channel)
    except PresetError as e:
        raise PresetError(f"{os.fspath(path)}: {e}", source=os.fspath(path)) from None
    atomic_write_bytes(path, data)


def write_raw(path: str | os.PathLike, voices: Iterable[Voice | np.ndarray]) -> None:
    """Write raw packed voices (hexter / raw bank style) atomically."""
    try:
        data = format_raw(list(voices))
    except PresetError as e:
        raise PresetError(f"{os.fspath(path)}: {e}", source=os.fspath(path)) from None
    atomic_write_bytes(path, data)


def single_voice_path(path: str | os.PathLike) -> str:
    """``PATCH.voice.syx`` beside ``PATCH.syx`` (the companion :func:`write_preset` writes)."""
    root, _ = os.path.splitext(os.fspath(path))
    return root + SINGLE_VOICE_SUFFIX


def write_preset(path: str | os.PathLike, name: str | None, normalized) -> list[str]:
    """Write one matched voice as Dexed loads it; returns the paths written.

    * ``path`` (``.syx``): a 32-voice bank, the voice in slot 0 and init voices in slots 1..31
      (the Dexed plugin loads banks, not bare single voices); a raw 4096-byte bank instead when
      ``path`` ends in ``.dx7`` / ``.bin`` / ``.vmem``.
    * ``PATH.voice.syx`` beside it: the 163-byte single-voice dump (for hardware and editors).

    ``name`` (up to 10 ASCII characters) replaces the name characters of ``normalized`` unless None.
    """
    voice = Voice.from_normalized(normalized, name)
    path = os.fspath(path)
    companion = single_voice_path(path)
    if os.path.abspath(companion) == os.path.abspath(path):
        raise PresetError(f"{path}: the bank and its single-voice companion would be the same file; name the bank "
                          "PATCH.syx", source=path)
    bank = [voice] + [Voice.init()] * (BANK_VOICES - 1)
    if path.lower().endswith(RAW_SUFFIXES):
        write_raw(path, bank)
    else:
        write_bank(path, bank)
    write_voice(companion, voice)
    return [path, companion]


# ----------------------------------------------------------------------------- the corpus
@dataclass(frozen=True, eq=False)
class HexterVoices:
    """hexter's voices (``/usr/share/hexter/*.dx7``, file names in byte order).

    Attributes:
        names: 10-character names (code for code).
        files: the file of each voice.
        indices: int ``[N]``, the voice's index in its file.
        vced: int32 ``[N, 155]`` (read-only).
        normalized: float64 ``[N, 155]`` (read-only).
        is_dx7_rom: bool ``[N]``: from ``dx7_roms.dx7``, the 128 voices of the original DX7 ROM
            cartridges (the held-out human set: never fit a prior or a model selection to them).
    """

    names: tuple[str, ...]
    files: tuple[str, ...]
    indices: np.ndarray
    vced: np.ndarray
    normalized: np.ndarray
    is_dx7_rom: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def voice(self, i: int) -> Voice:
        return Voice(self.vced[i])


def load_hexter(directory: str | os.PathLike = HEXTER_DIR) -> HexterVoices:
    """Every voice of hexter's ``*.dx7`` files (432 in Debian's hexter 1.1), cached per process.

    Raises FileNotFoundError naming ``sudo apt-get install hexter`` when the folder or its files
    are missing; PresetError for a corrupt file.
    """
    return _load_hexter(os.path.abspath(os.fspath(directory)))


@functools.lru_cache(maxsize=4)
def _load_hexter(directory: str) -> HexterVoices:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"hexter's DX7 voice banks not found: {directory} is missing; {_INSTALL_HEXTER}")
    files = sorted((f for f in os.listdir(directory) if f.lower().endswith(".dx7")), key=os.fsencode)
    if not files:
        raise FileNotFoundError(f"no *.dx7 voice banks in {directory}; {_INSTALL_HEXTER}")
    names: list[str] = []
    paths: list[str] = []
    indices: list[int] = []
    rows: list[np.ndarray] = []
    rom: list[bool] = []
    for f in files:
        path = os.path.join(directory, f)
        for k, v in enumerate(read_voices(path)):
            names.append(v.name)
            paths.append(path)
            indices.append(k)
            rows.append(v.vced)
            rom.append(f == DX7_ROM_FILE)
    vced = np.stack(rows).astype(np.int32)
    normalized = normalized_from_vced(vced)
    idx = np.asarray(indices, dtype=np.int64)
    is_rom = np.asarray(rom, dtype=bool)
    for a in (vced, normalized, idx, is_rom):
        a.setflags(write=False)
    return HexterVoices(tuple(names), tuple(paths), idx, vced, normalized, is_rom)


def hexter_corpus(subset: str = "all", directory: str | os.PathLike = HEXTER_DIR) -> tuple[list[str], np.ndarray]:
    """``(names, normalized [N, 155])`` of hexter's voices (names without trailing spaces).

    Args:
        subset: ``"all"`` (432 voices), ``"dx7_rom"`` (the 128 original DX7 ROM voices, the
            held-out human set) or ``"other"`` (the 304 TX7 and FB-01 voices).
    """
    hv = load_hexter(directory)
    if subset == "all":
        keep = np.ones(len(hv), dtype=bool)
    elif subset == "dx7_rom":
        keep = hv.is_dx7_rom
        if not keep.any():
            raise FileNotFoundError(f"{DX7_ROM_FILE} is missing from {os.fspath(directory)}; {_INSTALL_HEXTER}")
    elif subset == "other":
        keep = ~hv.is_dx7_rom
    else:
        raise ValueError(f"unknown subset {subset!r}; expected 'all', 'dx7_rom' or 'other'")
    idx = np.flatnonzero(keep)
    return [hv.names[i].rstrip(" ") for i in idx], np.array(hv.normalized[idx])


def _read_bytes(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as f:
        return f.read()
