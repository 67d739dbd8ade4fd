"""Dexed / DX7: the voice spec, .syx banks and single voices, raw and hexter banks (round trips
byte for byte, dexed-py agreeing with what we read and write), bad files, the hexter corpus and
the synth record."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from proxies.dexed import presets as P
from proxies.dexed.presets import PresetError, Voice
from proxies.dexed.spec import (ALGORITHM_CARRIERS, DEXED, INIT_VOICE, VCED_SIZE, normalized_from_vced, op_byte,
                                vced_from_normalized)

HEXTER_FILES = sorted(glob.glob(os.path.join(P.HEXTER_DIR, "*.dx7")))
needs_hexter = pytest.mark.skipif(not HEXTER_FILES, reason="hexter not installed (sudo apt-get install hexter)")


def _dexed():
    return pytest.importorskip("dexed")


def _raw(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _rom_bank() -> bytes:
    return _raw(os.path.join(P.HEXTER_DIR, P.DX7_ROM_FILE))[:P.BANK_PAYLOAD]


# --------------------------------------------------------------------------------------- spec
def test_spec_is_the_vced_layout():
    assert DEXED.n_params == VCED_SIZE == 155
    assert DEXED.names[0] == "op6_eg_rate1" and DEXED.names[20] == "op6_detune"
    assert DEXED.names[105] == "op1_eg_rate1" and DEXED.names[121] == "op1_output_level"
    assert DEXED.names[126:134] == tuple(f"pitch_eg_{k}{i}" for k in ("rate", "level") for i in range(1, 5))
    assert DEXED.names[134:145] == ("algorithm", "feedback", "osc_key_sync", "lfo_speed", "lfo_delay",
                                    "lfo_pitch_mod_depth", "lfo_amp_mod_depth", "lfo_key_sync", "lfo_wave",
                                    "pitch_mod_sens", "transpose")
    assert DEXED.names[145:] == tuple(f"name_char{i}" for i in range(1, 11))
    for op in range(1, 7):
        assert DEXED.names[op_byte(op, "output_level")] == f"op{op}_output_level"
    assert DEXED["algorithm"].choices[0] == "1" and len(DEXED["algorithm"].choices) == 32
    assert DEXED["lfo_wave"].choices == ("triangle", "saw_down", "saw_up", "square", "sine", "sample_hold")
    assert DEXED["op3_kls_left_curve"].choices == ("-LIN", "-EXP", "+EXP", "+LIN")
    assert DEXED["op3_osc_mode"].choices == ("ratio", "fixed")
    # the name and osc key sync (no effect in dexed-py) are not learned
    assert set(DEXED.names) - {DEXED.names[i] for i in DEXED.learned_indices} == \
        {"osc_key_sync"} | {f"name_char{i}" for i in range(1, 11)}
    assert bytes(INIT_VOICE[145:].astype(np.uint8)) == b"INIT VOICE"
    assert np.array_equal(DEXED.defaults_internal, INIT_VOICE)
    # control values: what Dexed displays
    ctrl = DEXED.internal_to_control(INIT_VOICE.astype(np.float64))
    assert ctrl[DEXED.index_of("op1_detune")] == 0 and ctrl[DEXED.index_of("transpose")] == 0
    assert ctrl[DEXED.index_of("algorithm")] == 1


def test_algorithm_carriers_agree_with_dexed_py():
    dexed = _dexed()
    for a in range(32):
        assert ALGORITHM_CARRIERS[a] == tuple(sorted(c + 1 for c in dexed.get_carriers(a))), a


def test_normalized_vced_round_trip_and_errors():
    rng = np.random.default_rng(0)
    v = np.round(rng.random((50, VCED_SIZE)) * (DEXED.maximum - DEXED.minimum) + DEXED.minimum).astype(np.int32)
    n = normalized_from_vced(v)
    assert n.min() >= 0 and n.max() <= 1
    assert np.array_equal(vced_from_normalized(n), v)
    assert np.array_equal(vced_from_normalized(n.astype(np.float32)), v)  # float32 survives
    assert np.array_equal(vced_from_normalized(DEXED.snap_normalized(n)), v)
    assert np.array_equal(DEXED.normalized_to_internal(n).astype(np.int32), v)
    bad = v[0].copy()
    bad[op_byte(2, "detune")] = 15
    with pytest.raises(ValueError, match=r"op2_detune \(VCED byte 104\) is 15, outside its range 0..14"):
        normalized_from_vced(bad)
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        vced_from_normalized(np.full(VCED_SIZE, 1.5))
    with pytest.raises(ValueError, match="155 parameters"):
        vced_from_normalized(np.zeros(145))


def test_prior_is_on_the_grid_and_honours_frozen():
    from proxies.dexed.spec import sample

    x = sample(np.random.default_rng(1), 300)
    assert x.shape == (300, VCED_SIZE) and x.dtype == np.float64
    v = vced_from_normalized(x)
    assert np.array_equal(normalized_from_vced(v), x)  # exactly on the grid
    assert np.array_equal(vced_from_normalized(DEXED.snap_normalized(x)), v)
    assert np.all(v[:, 145:] == INIT_VOICE[145:]) and np.all(v[:, 136] == 1)
    assert len(np.unique(v[:, 134])) == 32 and len(np.unique(v[:, 142])) == 6
    f = sample(np.random.default_rng(1), 40, {"algorithm": 31 / 31, "lfo_wave": 1.0})
    vf = vced_from_normalized(f)
    assert np.all(vf[:, 134] == 31) and np.all(vf[:, 142] == 5)
    # algorithm 32: all six are carriers, so every output level is a carrier's (75..99)
    ol = vf[:, [op_byte(op, "output_level") for op in range(1, 7)]]
    assert ol.min() >= 75
    with pytest.raises(KeyError, match="no parameter named"):
        sample(np.random.default_rng(1), 2, {"cutoff": 0.5})


# ---------------------------------------------------------------------------- VMEM <-> VCED
@needs_hexter
def test_unpack_agrees_with_dexed_py_on_every_hexter_voice():
    dexed = _dexed()
    hv = P.load_hexter()
    assert len(hv) == 432
    for i in range(len(hv)):
        data = _raw(hv.files[i])[hv.indices[i] * 128:(hv.indices[i] + 1) * 128]
        ref = np.frombuffer(dexed.Patch.from_packed(data).to_sysex()[:155], dtype=np.uint8)
        assert np.array_equal(ref, hv.vced[i]), (hv.files[i], hv.indices[i])
        assert P.pack_voice(hv.vced[i]) == data


@needs_hexter
@pytest.mark.parametrize("path", HEXTER_FILES, ids=os.path.basename)
def test_hexter_file_round_trips(path, tmp_path):
    data = _raw(path)
    voices = P.read_voices(path)
    assert len(voices) * P.VMEM_SIZE == len(data)
    # raw: byte for byte
    out = tmp_path / "raw.dx7"
    P.write_raw(out, voices)
    assert _raw(out) == data
    # .syx: 4104-byte dumps, valid checksums, the same voices (the last bank padded with init voices)
    syx = tmp_path / "bank.syx"
    P.write_bank(syx, voices)
    blob = _raw(syx)
    n_banks = -(-len(voices) // 32)
    assert len(blob) == n_banks * P.BANK_SYSEX_SIZE
    for b in range(n_banks):
        msg = blob[b * P.BANK_SYSEX_SIZE:(b + 1) * P.BANK_SYSEX_SIZE]
        assert msg[:6] == bytes([0xF0, 0x43, 0x00, 0x09, 0x20, 0x00]) and msg[-1] == 0xF7
        assert msg[-2] == (-sum(msg[6:-2])) & 0x7F
    back = P.read_voices(syx)
    assert len(back) == n_banks * 32
    for a, b in zip(voices, back):
        assert np.array_equal(a.vced, b.vced) and a.name == b.name
    assert all(np.array_equal(v.vced, INIT_VOICE) for v in back[len(voices):])
    P.write_bank(syx, back)
    assert _raw(syx) == blob  # a written bank is rewritten byte for byte


@needs_hexter
def test_bank_matches_dexed_py_reader_and_writer(tmp_path):
    dexed = _dexed()
    voices = P.parse_voices(_rom_bank(), "rom1")
    ours = tmp_path / "ours.syx"
    P.write_bank(ours, voices)
    patches = dexed.Patch.load_bank(str(ours))
    for v, p in zip(voices, patches):
        assert p.to_sysex()[:155] == bytes(v.vced.astype(np.uint8))
    theirs = tmp_path / "theirs.syx"
    dexed.Patch.save_to_bank(str(theirs), patches)
    assert _raw(theirs) == _raw(ours)
    # a bank on another MIDI channel reads the same
    assert [v.name for v in P.parse_voices(P.format_bank(voices, channel=5), "ch5")] == [v.name for v in voices]
    assert P.format_bank(voices, channel=5)[2] == 0x05
    # the raw 4096-byte bank reads the same
    assert all(np.array_equal(a.vced, b.vced) for a, b in zip(P.parse_voices(_rom_bank(), "raw"), voices))


def test_single_voice_sysex(tmp_path):
    rng = np.random.default_rng(3)
    from proxies.dexed.spec import sample

    voice = Voice.from_normalized(sample(rng, 1)[0], name="FM Bell ~")
    msg = P.format_voice(voice)
    assert len(msg) == P.VOICE_SYSEX_SIZE == 163
    assert msg[:6] == bytes([0xF0, 0x43, 0x00, 0x00, 0x01, 0x1B]) and msg[-1] == 0xF7
    assert msg[-2] == (-sum(msg[6:161])) & 0x7F
    assert msg[6:161] == bytes(voice.vced.astype(np.uint8))
    path = tmp_path / "v.syx"
    P.write_voice(path, voice)
    back = P.read_voice(path)
    assert np.array_equal(back.vced, voice.vced) and back.name == "FM Bell ~ "
    name, n = P.read_preset(path)
    assert name == "FM Bell ~" and np.array_equal(n, voice.normalized)
    dexed = pytest.importorskip("dexed")
    assert dexed.Patch.from_sysex(msg[6:161]).to_sysex()[:155] == msg[6:161]
    # several messages in one file: a single voice after a bank
    both = P.format_bank([voice]) + msg
    assert len(P.parse_voices(both, "both")) == 33


def test_write_preset_bank_plus_single_voice(tmp_path):
    from proxies.dexed.spec import sample

    n = sample(np.random.default_rng(4), 1)[0]
    out = tmp_path / "match.syx"
    paths = P.write_preset(out, "MATCHED\u00e9 sound", n)
    assert paths == [str(out), str(tmp_path / "match.voice.syx")]
    assert os.path.getsize(out) == 4104 and os.path.getsize(paths[1]) == 163
    bank = P.read_voices(out)
    assert bank[0].name == "MATCHED? s"  # 10 ASCII characters
    assert np.array_equal(bank[0].vced[:145], vced_from_normalized(n)[:145])
    assert all(np.array_equal(v.vced, INIT_VOICE) for v in bank[1:])
    single = P.read_voice(paths[1])
    assert np.array_equal(single.vced, bank[0].vced)
    assert sorted(os.listdir(tmp_path)) == ["match.syx", "match.voice.syx"]  # no temporaries left
    # name=None keeps the name characters of the vector; a .dx7 path writes a raw bank
    raw = tmp_path / "m.dx7"
    P.write_preset(raw, None, n)
    assert os.path.getsize(raw) == 4096 and P.read_voices(raw)[0].name == "INIT VOICE"


@needs_hexter
def test_written_bank_renders_like_the_voice_loaded_directly(tmp_path):
    dexed = _dexed()
    from proxies.dexed.engine import voice_bytes
    from proxies.dexed.spec import sample

    x = np.concatenate([sample(np.random.default_rng(5), 3), P.hexter_corpus("other")[1][:3]])
    for k, n in enumerate(x):
        path = tmp_path / f"p{k}.syx"
        P.write_preset(path, f"P{k}", n)
        a = dexed.DexedSynth(16000)
        a.load_patch(dexed.Patch.load_bank(str(path))[0])  # what a user of the .syx gets
        b = dexed._dexed.DexedSynth(16000.0, 0)
        b.load_sysex(voice_bytes(vced_from_normalized(n)))
        ya, yb = a.render(60, 100, 0.4, 0.6), b.render(60, 100, 0.4, 0.6)
        assert np.abs(yb).max() > 0
        assert np.array_equal(ya, yb), k


# ------------------------------------------------------------------------------ bad files
def _bank_bytes() -> bytes:
    return P.format_bank([Voice.init("A"), Voice.init("B")])


@pytest.mark.parametrize("case, data, pattern", [
    ("empty", b"", r"the file is empty"),
    ("truncated bank", _bank_bytes()[:4000], r"truncated 32-voice bulk dump: it needs 4104 bytes, the file ends "
                                             r"after 4000; .*complete copy"),
    ("bad checksum", _bank_bytes()[:-2] + bytes([(_bank_bytes()[-2] + 1) & 0x7F, 0xF7]),
     r"byte 4102\): 32-voice bulk dump checksum is 0x.., the data sum to 0x..; .*strict=False"),
    ("stray bytes", _bank_bytes() + b"\x00\x00", r"byte 4104\): 2 stray byte\(s\) after the last sysex message"),
    ("missing F7", _bank_bytes()[:-1] + b"\x00", r"without its closing F7"),
    ("byte count", _bank_bytes()[:4] + b"\x10\x00" + _bank_bytes()[6:], r"byte count 10 00, expected 20 00"),
    ("bit 7 in data", _bank_bytes()[:10] + b"\x90" + _bank_bytes()[11:], r"byte 10\): data byte 0x90 has bit 7 set"),
    ("raw size", bytes(4000), r"4000 bytes is neither a sysex file .* nor raw packed voices \(a multiple of 128"),
    ("no voices", bytes([0xF0, 0x7E, 0x00, 0x06, 0x01, 0xF7]), r"no DX7 voice data in 1 sysex message"),
    ("unterminated", bytes([0xF0, 0x7E, 0x00, 0x06]), r"without its closing F7 \(truncated\)"),
    ("short voice", P.format_voice(Voice.init())[:100], r"truncated single-voice dump: it needs 163 bytes"),
])
def test_bad_files_raise_preset_error(tmp_path, case, data, pattern):
    path = tmp_path / "bad.syx"
    path.write_bytes(data)
    with pytest.raises(PresetError, match=pattern) as e:
        P.read_voices(path)
    assert str(path) in str(e.value) and isinstance(e.value, ValueError)
    assert e.value.source == str(path)


def test_out_of_range_and_stray_bits(tmp_path):
    raw = bytearray(P.format_raw([Voice.init()]))
    raw[0] = 120  # OP6 EG rate 1
    path = tmp_path / "bad.dx7"
    path.write_bytes(bytes(raw))
    with pytest.raises(PresetError, match=r"bad.dx7 \(voice 0\): op6_eg_rate1 is 120, outside its DX7 range 0..99; "
                                          r".*strict=False"):
        P.read_voices(path)
    assert P.read_voices(path, strict=False)[0].vced[0] == 99  # clamped, as dexed-py's Patch does
    raw[0] = 99
    raw[116] |= 0x0E  # LFO wave 7
    path.write_bytes(bytes(raw))
    with pytest.raises(PresetError, match=r"lfo_wave is 7, outside its DX7 range 0..5"):
        P.read_voices(path)
    assert P.read_voices(path, strict=False)[0].vced[142] == 5
    raw[116] = P.format_raw([Voice.init()])[116]
    raw[11] |= 0x40  # a bit the curve byte leaves 0
    path.write_bytes(bytes(raw))
    with pytest.raises(PresetError, match=r"packed byte 11\): 0x40 has bits set that the DX7 format leaves 0"):
        P.read_voices(path)
    assert np.array_equal(P.read_voices(path, strict=False)[0].vced, INIT_VOICE)
    # single-voice VCED out of range; lenient mode masks / clamps it
    msg = bytearray(P.format_voice(Voice.init()))
    msg[6 + 144] = 60  # transpose
    msg[-2] = (-sum(msg[6:161])) & 0x7F
    path = tmp_path / "v.syx"
    path.write_bytes(bytes(msg))
    with pytest.raises(PresetError, match=r"transpose \(VCED byte 144\) is 60, outside its range 0..48"):
        P.read_voices(path)
    assert P.read_voices(path, strict=False)[0].vced[144] == 48
    # a wrong checksum loads leniently, as Dexed does (with a warning)
    bank = bytearray(_bank_bytes())
    bank[-2] ^= 1
    path.write_bytes(bytes(bank))
    assert len(P.read_voices(path, strict=False)) == 32


def test_index_and_writer_errors(tmp_path):
    path = tmp_path / "b.syx"
    P.write_bank(path, [Voice.init("ONE"), Voice.init("TWO")])
    with pytest.raises(PresetError, match=r"holds 32 voices \(0: 'ONE', 1: 'TWO', .*--index K"):
        P.read_voice(path)
    with pytest.raises(PresetError, match=r"--index 32 is out of range; the file holds 32 voices \(0..31\)"):
        P.read_voice(path, 32)
    assert P.read_voice(path, 1).name == "TWO       "
    with pytest.raises(PresetError, match="needs at least one voice"):
        P.write_bank(tmp_path / "e.syx", [])
    with pytest.raises(PresetError, match=r"op1_output_level \(VCED byte 121\) is 100"):
        v = INIT_VOICE.copy()
        v[121] = 100
        P.format_voice(v)
    with pytest.raises(PresetError, match="MIDI channel must be 0..15"):
        P.format_voice(Voice.init(), channel=16)
    with pytest.raises(PresetError, match=r"outside \[0, 1\]"):
        P.write_preset(tmp_path / "x.syx", "X", np.full(VCED_SIZE, 2.0))
    assert not (tmp_path / "x.syx").exists()


# ---------------------------------------------------------------------------------- corpus
@needs_hexter
def test_hexter_corpus_subsets():
    names, x = P.hexter_corpus()
    assert len(names) == 432 and x.shape == (432, VCED_SIZE)
    rom_names, rom = P.hexter_corpus("dx7_rom")
    other_names, other = P.hexter_corpus("other")
    assert rom.shape == (128, VCED_SIZE) and other.shape == (304, VCED_SIZE)
    assert rom_names[0] == "BRASS   1" and "EXPLOSION" in rom_names
    assert sorted(rom_names + other_names) == sorted(names)
    assert np.array_equal(vced_from_normalized(rom), P.load_hexter().vced[P.load_hexter().is_dx7_rom])
    assert P.load_hexter() is P.load_hexter()  # cached
    with pytest.raises(ValueError, match="unknown subset"):
        P.hexter_corpus("rom")


def test_missing_hexter_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sudo apt-get install hexter"):
        P.load_hexter(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no \*.dx7 voice banks in .*sudo apt-get install hexter"):
        P.load_hexter(tmp_path)


# ----------------------------------------------------------------------------------- synth
def test_synth_record_imports_nothing_heavy():
    code = ("import sys; import proxies.dexed.synth as m; from proxies.synth import get_synth; "
            "s = get_synth('dexed'); assert s is m.SYNTH; "
            "bad = [k for k in sys.modules if k.split('.')[0] in ('jax', 'jaxlib', 'dexed', 'flax')]; "
            "assert not bad, bad; print(s.spec.n_params, s.channels, s.notes.note_off_quantum)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["155", "1", "64"]


@needs_hexter
def test_synth_presets_contract(tmp_path):
    from proxies.dexed.synth import SPECTRAL_PARAMS, SYNTH

    assert SYNTH.presets.write_suffix == ".syx" and ".dx7" in SYNTH.presets.suffixes
    assert issubclass(SYNTH.presets.error, ValueError)
    assert set(SPECTRAL_PARAMS) <= {DEXED.names[i] for i in DEXED.learned_indices}
    names, x = SYNTH.presets.corpus()
    written = SYNTH.presets.write(str(tmp_path / "a.syx"), names[7], x[7])
    assert len(written) == 2
    name, n = SYNTH.presets.read(written[0], 0)
    assert name == names[7] and np.array_equal(n, x[7])
    assert [nm for nm, _ in SYNTH.presets.read_all(written[1])] == [names[7]]
    x2 = SYNTH.sample_presets(np.random.default_rng(0), 5)
    assert x2.shape == (5, VCED_SIZE) and np.all(SYNTH.reproducible(x2))
