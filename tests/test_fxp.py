"""Generic VST2 FxCk .fxp files (proxies.fxp): round trips with Nekobi's values, DawDreamer loading
what we write, and every bad-file class giving an FxpError that names the file, the offset and the fix."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from proxies import fxp as F
from proxies.fxp import FxpError
from proxies.synth import get_synth

NEKOBI_VST = "/usr/lib/vst/Nekobi-vst.so"
NEKOBI = get_synth("nekobi")
SPEC = NEKOBI.spec
ID = "DNek"


@pytest.fixture(autouse=True)
def _keep_fp_env():
    """Loading Nekobi in this process sets flush-to-zero for good: keep it from leaking into other tests."""
    from proxies.probe import preserve_fp_env

    with preserve_fp_env():
        yield


def _presets(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = NEKOBI.sample_presets(rng, n)
    out[0] = SPEC.defaults_normalized
    out[1] = rng.random(SPEC.n_params)  # off-grid values too: FxCk stores any float32 in [0, 1]
    out[2, :] = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    return out


def test_fxck_round_trip(tmp_path):
    for k, n in enumerate(_presets()):
        path = tmp_path / f"p{k}.fxp"
        assert F.write_fxck(path, n, f"preset {k}", ID, n_params=8) == str(path)
        data = path.read_bytes()
        assert len(data) == 56 + 4 * 8 and data[:4] == b"CcnK" and data[8:12] == b"FxCk" and data[16:20] == b"DNek"
        assert struct.unpack(">i", data[4:8])[0] == len(data) - 8 and struct.unpack(">i", data[24:28])[0] == 8
        name, back = F.read_fxck(path, plugin_id=ID, n_params=8, param_names=SPEC.names, plugin="Nekobi")
        assert name == f"preset {k}"
        np.testing.assert_array_equal(back, n.astype(np.float32).astype(np.float64))
        assert F.format_fxck(back, name, ID) == data  # float32 values rewrite byte for byte
    # long names are cut to 27 bytes, never inside a UTF-8 character; the ID check is optional
    F.write_fxck(tmp_path / "long.fxp", _presets()[0], "é" * 20, ID)
    name, _ = F.read_fxck(tmp_path / "long.fxp")
    assert name == "é" * 13 and len(name.encode()) == 26
    F.write_fxck(tmp_path / "noid.fxp", _presets()[0], "x", None)
    assert (tmp_path / "noid.fxp").read_bytes()[16:20] == b"\0\0\0\0"
    assert F.plugin_id_of((tmp_path / "p0.fxp").read_bytes()) == "DNek"
    assert F.plugin_id_of((tmp_path / "noid.fxp").read_bytes()) == "" and F.plugin_id_of(b"RIFF") == ""


def test_synth_preset_formats(tmp_path):
    """Nekobi's PresetFormats: write PATH.fxp (FxCk with its ID), read / read_all back."""
    fmt = NEKOBI.presets
    assert fmt.suffixes == (".fxp",) and fmt.write_suffix == ".fxp" and fmt.corpus is None and fmt.error is FxpError
    n = _presets()[3]
    written = fmt.write(str(tmp_path / "bass.fxp"), "bass", n)
    assert written == [str(tmp_path / "bass.fxp")]
    assert fmt.write(str(tmp_path / "other.txt"), "o", n) == [str(tmp_path / "other.fxp")]
    name, back = fmt.read(written[0], None)
    assert name == "bass" and np.array_equal(back, n.astype(np.float32).astype(np.float64))
    assert [x[0] for x in fmt.read_all(written[0])] == ["bass"]
    with pytest.raises(FxpError, match="single program; drop the index"):
        fmt.read(written[0], 3)
    with pytest.raises(FxpError, match="expected 8 normalized values, got 7"):
        fmt.write(str(tmp_path / "short.fxp"), "s", n[:7])
    with pytest.raises(FxpError, match=r"parameter 'Cutoff' has normalized value 1\.5, outside \[0, 1\]"):
        fmt.write(str(tmp_path / "bad.fxp"), "b", np.where(np.arange(8) == 2, 1.5, n))
    assert not (tmp_path / "bad.fxp").exists()
    # an empty program name reads as the file's stem
    F.write_fxck(tmp_path / "unnamed.fxp", n, "", ID)
    assert fmt.read(str(tmp_path / "unnamed.fxp"), None)[0] == "unnamed"


@pytest.mark.plugin
def test_dawdreamer_loads_written_fxck(tmp_path):
    """DawDreamer's load_preset sets the values we wrote: the plugin then reports them back (the
    categorical Waveform snapped to its grid, exactly as the spec snaps it; continuous ones within
    one float32 step, the plugin's own normalized -> value -> normalized round trip) and shows the
    same display text as after set_parameter of the same values."""
    if not os.path.exists(NEKOBI_VST):
        pytest.skip(f"{NEKOBI_VST} missing: sudo apt-get install dpf-plugins-vst")
    import dawdreamer

    engine = dawdreamer.RenderEngine(16000, 512)
    proc = engine.make_plugin_processor("nekobi_fxp", NEKOBI_VST)
    presets = _presets(6, seed=3)
    presets[4] = np.random.default_rng(4).random(8)  # Waveform off its grid: the plugin snaps it
    for k, n in enumerate(presets):
        path = tmp_path / f"d{k}.fxp"
        NEKOBI.presets.write(str(path), f"d{k}", n)
        for i in range(8):  # somewhere else first
            proc.set_parameter(i, 1.0 - float(n[i]) if abs(n[i] - 0.5) > 0.1 else 0.0)
        assert proc.load_preset(str(path)), f"DawDreamer refused {path}"
        got = np.array([proc.get_parameter(i) for i in range(8)], dtype=np.float64)
        want = SPEC.snap_normalized(n).astype(np.float32).astype(np.float64)
        assert got[0] == want[0], (k, got[0], want[0])
        np.testing.assert_allclose(got, want, rtol=0, atol=1.2e-7, err_msg=f"preset {k}")
        texts = [proc.get_parameter_text(i) for i in range(8)]
        for i in range(8):  # a far value first (JUCE skips a set within ~1 ulp of its cached value)
            proc.set_parameter(i, 0.0 if n[i] >= 0.5 else 1.0)
            proc.set_parameter(i, float(np.float32(n[i])))
        assert [proc.get_parameter_text(i) for i in range(8)] == texts, k


def _error(data: bytes, tmp_path, *match: str, **kw) -> str:
    path = tmp_path / "bad.fxp"
    path.write_bytes(data)
    with pytest.raises(FxpError) as info:
        F.read_fxck(path, **{"plugin_id": ID, "n_params": 8, "param_names": SPEC.names, "plugin": "Nekobi", **kw})
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    assert info.value.source == str(path)
    for m in match:
        assert m in msg, (m, msg)
    return msg


def test_bad_fxck(tmp_path):
    good = F.format_fxck(_presets()[3], "p", ID)

    def patch(data: bytes, offset: int, value: bytes) -> bytes:
        return data[:offset] + value + data[offset + len(value):]

    _error(b"", tmp_path, "truncated: 0 bytes", "write it again")
    _error(good[:20], tmp_path, "truncated: 20 bytes, a VST2 .fxp header needs 28")
    _error(good[:-1], tmp_path, "(byte 4): byteSize field says 88 bytes but the file has 87")
    _error(patch(good[:-4], 4, struct.pack(">i", 76)), tmp_path, "FxCk of 84 bytes, expected 88 (truncated)")
    _error(patch(good + b"\0\0\0\0", 4, struct.pack(">i", 84)), tmp_path, "expected 88 (extra bytes at the end)")
    _error(patch(good, 0, b"RIFF"), tmp_path, "(byte 0): wrong magic b'RIFF'", "not a VST2 .fxp")
    _error(patch(good, 16, b"amsy"), tmp_path, "(byte 16): made for the plugin with ID b'amsy', not Nekobi (b'DNek')",
           "use a preset saved from Nekobi")
    _error(patch(good, 12, struct.pack(">i", 7)), tmp_path, "(byte 12): format version 7")
    _error(patch(good, 24, struct.pack(">i", 7)), tmp_path, "(byte 24): FxCk with 7 parameters, Nekobi has 8")
    _error(patch(good, 8, b"FxBk"), tmp_path, "(byte 8): an FxBk bank", "export one program")
    _error(patch(good, 8, b"FPCh"), tmp_path, "(byte 8): an opaque FPCh chunk", "save the preset as an FxCk")
    _error(patch(good, 8, b"Abcd"), tmp_path, "(byte 8): unknown .fxp kind b'Abcd'")
    _error(patch(good, 56 + 4 * 2, struct.pack(">f", 1.5)), tmp_path,
           "(byte 64): parameter 'Cutoff' has normalized value 1.5, outside [0, 1]", "clamp it silently")
    _error(patch(good, 56 + 4 * 7, struct.pack(">f", -0.25)), tmp_path, "(byte 84): parameter 'Volume'")
    _error(patch(good, 56, struct.pack(">f", float("nan"))), tmp_path, "(byte 56): parameter 'Waveform'",
           "not finite")
    _error(patch(good, 60, struct.pack(">f", float("inf"))), tmp_path, "(byte 60): parameter 'Tuning'")
    # without names, the index; without an ID or count, those checks are skipped
    _error(patch(good, 64, struct.pack(">f", 2.0)), tmp_path, "parameter 2 has", param_names=None)
    name, n = F.read_fxck(_write(tmp_path, patch(good, 16, b"XXXX")), plugin_id=None, n_params=None)
    assert n.shape == (8,)
    # JUCE writes byteSize 0: accepted
    assert F.parse_fxck(patch(good, 4, b"\0\0\0\0"), plugin_id=ID, n_params=8)[0] == "p"
    with pytest.raises(FileNotFoundError):
        F.read_fxck(tmp_path / "missing.fxp")
    # writer-side checks
    with pytest.raises(FxpError, match="exactly 4 characters"):
        F.format_fxck(_presets()[0], "x", "Nekobi")
    with pytest.raises(FxpError, match="1-D array"):
        F.format_fxck(_presets()[:2], "x", ID)
    with pytest.raises(FxpError, match="parameter 3 has normalized value nan, which is not finite"):
        F.format_fxck(np.where(np.arange(8) == 3, np.nan, 0.5), "x", ID)
    assert issubclass(FxpError, ValueError)


def _write(tmp_path, data: bytes):
    path = tmp_path / "x.fxp"
    path.write_bytes(data)
    return path


def test_amsynth_uses_generic_fxck(tmp_path):
    """amsynth's FxCk path is proxies.fxp (its errors stay PresetError, its ID 'amsy')."""
    from proxies.amsynth import presets as P
    from proxies.amsynth.spec import AMSYNTH

    n = AMSYNTH.snap_normalized(AMSYNTH.sample_normalized(np.random.default_rng(0), 1))[0]
    data = P.format_fxp_params(n, "a")
    assert data == F.format_fxck(n, "a", "amsy")
    name, back = F.parse_fxck(data, plugin_id="amsy", n_params=41)
    assert name == "a" and np.array_equal(back, n.astype(np.float32).astype(np.float64))
    with pytest.raises(P.PresetError, match=r"\(byte 16\): made for the plugin with ID b'DNek', not amsynth"):
        P.parse_fxp(F.format_fxck(_presets()[0], "n", ID)[:0] + data[:16] + b"DNek" + data[20:], "x.fxp")
