"""amsynth preset files: text, banks, .fxp; round trips, the reference examples, bad input, and
the real plugin loading what we write."""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from proxies.amsynth import presets as P
from proxies.amsynth.presets import Preset, PresetError
from proxies.amsynth.spec import AMSYNTH, uses_noise

EXAMPLES = Path("/work/shared/amsynth/preset_examples")
FACTORY = Path(P.FACTORY_BANKS_DIR)
NAMES = AMSYNTH.names
needs_examples = pytest.mark.skipif(not EXAMPLES.is_dir(), reason="shared/amsynth/preset_examples missing")
needs_factory = pytest.mark.skipif(not FACTORY.is_dir(), reason="amsynth factory banks not installed")

# random.amSynth as amsynth's own %g (6 significant digits) writes it: roundtrip_state.bin's chunk
RANDOM_TEXT_VALUES = {
    "amp_attack": "0.1", "amp_decay": "0.5", "amp_sustain": "0.6", "amp_release": "0.2", "osc1_waveform": "2",
    "filter_attack": "1.12372768", "filter_decay": "1.62898242", "filter_sustain": "0.78872335",
    "filter_release": "0.234648973", "filter_resonance": "0.0274970531", "filter_env_amount": "10.744483",
    "filter_cutoff": "0.365534127", "osc2_detune": "0.524560153", "osc2_waveform": "1", "master_vol": "0.5",
    "lfo_freq": "5.41155005", "lfo_waveform": "0", "osc2_range": "4", "osc_mix": "0.802854896",
    "freq_mod_amount": "0.0385409631", "filter_mod_amount": "-0.949108303", "amp_mod_amount": "0.0828249454",
    "osc_mix_mode": "0.939149141", "osc1_pulsewidth": "0.381204247", "osc2_pulsewidth": "0.21659939",
    "reverb_roomsize": "0.422116578", "reverb_damp": "0.0290407874", "reverb_wet": "0",
    "reverb_width": "0.437887579", "distortion_crunch": "0.446231008", "osc2_sync": "0",
    "portamento_time": "0", "keyboard_mode": "0", "osc2_pitch": "-1", "filter_type": "1", "filter_slope": "0",
    "freq_mod_osc": "2", "filter_kbd_track": "0.556454301", "filter_vel_sens": "0.642294347",
    "amp_vel_sens": "0.185906261", "portamento_mode": "0.992543399",
}


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def random_presets(n: int, seed: int = 0) -> list[Preset]:
    norm = AMSYNTH.sample_normalized(np.random.default_rng(seed), n)
    for k, edge in enumerate((0.0, 1.0)[:n]):  # include every range edge
        norm[k] = edge
    return [Preset.from_normalized(f"random {k}", x) for k, x in enumerate(norm)]


def preset_text(name="t", params=(("filter_cutoff", "0.5"),), header=P.PRESET_HEADER, extra=()) -> str:
    lines = [header, f"<preset> <name> {name}"] + [f"<parameter> {k} {v}" for k, v in params] + list(extra)
    return "\n".join(lines) + "\n"


def bank_bytes(*presets: tuple[str, list[tuple[str, str]]], header="amSynth") -> bytes:
    lines = [header]
    for name, params in presets:
        lines.append(f"<preset> <name> {name}")
        lines += [f"<parameter> {k} {v}" for k, v in params]
    return ("\n".join(lines + ["EOF"]) + "\n").encode()


# ------------------------------------------------------------------------------ the Preset
def test_preset_holds_plugin_values():
    p = Preset("x", AMSYNTH.defaults_internal)
    assert p == Preset.default("x")
    assert p.internal.dtype == np.float64 and not p.internal.flags.writeable
    # float32 like the plugin: master_vol 0.67 is held as 0.6700000166893005, osc2_range 0 reports 3/7 in float32
    np.testing.assert_array_equal(p.normalized, f32(AMSYNTH.defaults_normalized))
    assert p.value("master_vol") == float(np.float32(0.67)) == 0.6700000166893005
    # stepped values snap like the plugin's setValue: C roundf of (v - min) / step
    q = p.with_values(osc1_waveform=2.5, osc2_pitch=-0.5, osc2_range=-1.5, lfo_waveform=4.49)
    assert [q.value(n) for n in ("osc1_waveform", "osc2_pitch", "osc2_range", "lfo_waveform")] == [3, 0, -1, 4]
    assert Preset.from_normalized("x", AMSYNTH.defaults_normalized) == p
    # normalized -> internal uses the plugin's float32 arithmetic
    n = np.full(41, 0.3)
    np.testing.assert_array_equal(Preset.from_normalized("n", n).internal, AMSYNTH.normalized_to_internal(n))
    assert Preset.from_normalized("n", n).value("filter_cutoff") == float(np.float32(np.float32(0.3) * 2 - 0.5))


def test_preset_rejects_bad_values_and_names():
    v = AMSYNTH.defaults_internal
    with pytest.raises(PresetError, match="expected 41 internal values"):
        Preset("x", v[:40])
    with pytest.raises(PresetError, match="'filter_cutoff' is not finite"):
        Preset("x", np.where(np.arange(41) == 11, np.nan, v))
    with pytest.raises(PresetError, match=r"'filter_cutoff' value 1.6 is outside its range \[-0.5, 1.5\]"):
        Preset("x", np.where(np.arange(41) == 11, 1.6, v))
    for bad in ("", "   ", "a\nb", "a\0", "x <parameter> y"):
        with pytest.raises(PresetError, match="name"):
            Preset(bad, v)
    with pytest.raises(PresetError, match=r"'amp_attack' normalized value .*1\.5.* is outside \[0, 1\]"):
        Preset.from_normalized("x", np.where(np.arange(41) == 0, 1.5, 0.5))
    # the float32 maximum of freq_mod_amount (1.25992105 rounds up) is inside the range
    top = Preset.from_normalized("top", np.ones(41))
    assert top.value("freq_mod_amount") == float(np.float32(1.25992105)) > 1.25992105
    assert P.parse_preset_text(P.format_preset_text(top)) == top


# --------------------------------------------------------------------------- preset text
def test_format_preset_text_layout():
    p = P.parse_preset_text(preset_text("My  Patch ", [("osc2_pitch", "-7"), ("lfo_freq", "0.1")]))
    lines = P.format_preset_text(p).split("\n")
    assert lines[:2] == ["amSynth1.0preset", "<preset> <name> My Patch"]
    assert [ln.split()[1] for ln in lines[2:43]] == list(NAMES)
    assert lines[43:] == [""]
    assert "<parameter> osc2_pitch -7" in lines and "<parameter> lfo_freq 0.1" in lines
    assert "<parameter> master_vol 0.67" in lines and "<parameter> filter_cutoff 1.5" in lines
    assert p.missing == tuple(n for n in NAMES if n not in ("osc2_pitch", "lfo_freq"))
    assert p.name == "My Patch"  # amsynth joins the name's words with single spaces


def test_text_round_trip_is_exact_on_random_presets():
    presets = random_presets(300)
    for p in presets:
        text = P.format_preset_text(p)
        q = P.parse_preset_text(text)
        assert q == p and q.missing == ()
        np.testing.assert_array_equal(q.internal, f32(q.internal))  # float32-exact
        assert P.format_preset_text(q) == text
        # %.9g (what params.format_value writes) parses to the same values
        nine = "\n".join(text.split("\n")[:2] + [f"<parameter> {n} {v:.9g}" for n, v in zip(NAMES, p.internal)])
        assert P.parse_preset_text(nine) == p
    # every value uses 6 to 9 significant digits
    digits = {len(v.lstrip("-").replace(".", "").lstrip("0")) for p in presets[:50]
              for v in (ln.split()[2] for ln in P.format_preset_text(p).split("\n")[2:43]) if v != "0"}
    assert max(digits) <= 9


def test_text_properties_and_unused_are_kept_or_skipped():
    text = preset_text(params=[("amp_attack", "0.5"), ("unused", "whatever"), ("osc2_pitch", "3")],
                       extra=["<property> tuning_scl_file /tmp/a b.scl", "<property> tuning_kbm_file /x.kbm"])
    p = P.parse_preset_text(text)
    assert p.properties == (("tuning_scl_file", "/tmp/a b.scl"), ("tuning_kbm_file", "/x.kbm"))
    assert p.value("amp_attack") == 0.5 and p.value("osc2_pitch") == 3
    out = P.format_preset_text(p)
    assert out.endswith("<property> tuning_scl_file /tmp/a b.scl\n<property> tuning_kbm_file /x.kbm\n")
    assert "unused" not in out
    assert P.parse_preset_text(out) == p
    # numbers: anything Python's float takes as a finite decimal
    for s, x in (("1e-07", 1e-07), ("+0.5", 0.5), (".25", 0.25), ("1.", 1.0), ("2.5E-1", 0.25), ("-0", 0.0)):
        assert P.parse_preset_text(preset_text(params=[("osc_mix", s)])).value("osc_mix") == float(np.float32(x))


# ----------------------------------------------------------------------------------- banks
@needs_factory
def test_factory_banks():
    fp = P.load_factory_banks()
    assert len(fp) == 3482 and fp.internal.shape == fp.normalized.shape == fp.present.shape == (3482, 41)
    assert P.load_factory_banks(str(FACTORY) + "/") is fp  # cached per process
    files = sorted({os.path.basename(f) for f in fp.bank_files})
    assert len(files) == 28 and os.path.basename(fp.bank_files[0]) == "BriansBank01.amSynth.bank"
    assert (fp.names[0], fp.names[-1]) == ("basic11", "Dirty Pulsating Bass")
    assert (fp.preset(0).name, fp.preset(3481).name) == (fp.names[0], fp.names[-1])
    assert os.path.basename(fp.bank_files[-1]) == "amsynth_factory.bank" and fp.bank_indices[-1] == 25
    assert fp.names.count("Hideaway Stack") == 0 and " Hideaway Stack" in fp.names  # names kept byte for byte
    # old banks lack the newer parameters, which take their defaults
    assert fp.present.sum(axis=0).tolist() == [3482] * 36 + [1280] * 4 + [1152]
    absent = ~fp.present
    defaults = np.broadcast_to(f32(AMSYNTH.defaults_internal), fp.internal.shape)
    np.testing.assert_array_equal(fp.internal[absent], defaults[absent])
    assert ((fp.normalized >= 0) & (fp.normalized <= 1)).all() and fp.normalized.max() == 1.0
    np.testing.assert_array_equal(fp.normalized, AMSYNTH.internal_to_normalized(fp.internal.astype(np.float32)))
    np.testing.assert_array_equal(fp.internal, f32(fp.internal))
    assert not fp.internal.flags.writeable
    assert fp.preset(0).value("amp_attack") == float(np.float32(0.0333333))
    assert float(fp.internal.sum()) == pytest.approx(80864.66528955562, rel=1e-12)
    np.testing.assert_allclose(fp.internal.mean(axis=0)[[0, 11, 14]], [0.244615, 0.562827, 0.602108], atol=5e-7)


@needs_factory
def test_every_factory_bank_round_trips(tmp_path):
    for path in sorted(FACTORY.iterdir()):
        original = path.read_bytes()
        presets = P.read_bank(path)
        data = P.format_bank(presets)
        assert P.parse_bank_text(data) == presets, path.name
        # the only changes: lines for the parameters old banks lacked (defaults), a final newline
        ours = data.decode().split("\n")
        expected, k = [], 1
        for p in presets:
            expected.append(ours[k])
            expected += [ln for ln, n in zip(ours[k + 1:k + 42], NAMES) if n not in p.missing]
            k += 42
        expected += ["EOF", ""]
        assert ours[0] == "amSynth" and ours[k:] == ["EOF", ""]
        newline = "" if original.endswith(b"\n") else "\n"
        assert "\n".join(["amSynth"] + expected) == original.decode() + newline, path.name
    out = tmp_path / "copy.bank"
    presets = P.read_bank(FACTORY / "PatriksBank01.bank")
    P.write_bank(out, presets)
    assert out.read_bytes() == (FACTORY / "PatriksBank01.bank").read_bytes()
    assert P.read_bank(out) == presets


def test_bank_write_read_random_and_limits(tmp_path):
    presets = random_presets(128, seed=1)
    presets[5] = dataclasses.replace(presets[5], name="unused")  # amsynth's writer would skip it; we don't
    presets[6] = dataclasses.replace(presets[6], name="  spaced  name ")
    path = tmp_path / "r.bank"
    P.write_bank(path, presets)
    assert P.read_bank(path) == presets
    assert path.read_bytes().startswith(b"amSynth\n<preset> <name> random 0\n<parameter> amp_attack 0\n")
    assert path.read_bytes().endswith(b"\nEOF\n")
    assert P.read_preset_file(path, index=6).name == "  spaced  name "
    assert os.listdir(tmp_path) == ["r.bank"]  # no temporary files left
    before = path.read_bytes()
    with pytest.raises(PresetError, match=rf"{path}: 129 presets do not fit in one bank \(at most 128\)"):
        P.write_bank(path, presets + presets[:1])
    assert path.read_bytes() == before  # a failed write leaves the old file
    with pytest.raises(PresetError, match="property"):
        P.write_bank(path, [dataclasses.replace(presets[0], properties=(("tuning_scl_file", "/a.scl"),))])
    P.write_bank(path, [])
    assert P.read_bank(path) == [] and path.read_bytes() == b"amSynth\nEOF\n"


def test_bank_missing_parameters_take_defaults():
    data = bank_bytes(("a", [("osc2_pitch", "5")]), ("b", []))
    a, b = P.parse_bank_text(data)
    assert a.value("osc2_pitch") == 5 and a.missing == tuple(n for n in NAMES if n != "osc2_pitch")
    np.testing.assert_array_equal(b.internal, f32(AMSYNTH.defaults_internal))
    assert len(b.missing) == 41


# ---------------------------------------------------------------------------------- .fxp
def test_fxp_params_round_trip(tmp_path):
    for p in random_presets(40, seed=2):
        path = tmp_path / "p.fxp"
        P.write_fxp_params(path, p)
        data = path.read_bytes()
        assert len(data) == 220 and data[:4] == b"CcnK" and data[8:12] == b"FxCk"
        assert struct.unpack(">i", data[4:8])[0] == 212 and data[16:20] == b"amsy"
        n32 = np.frombuffer(data, ">f4", offset=56)
        np.testing.assert_array_equal(n32, p.normalized.astype(np.float32))
        q = P.read_fxp(path)
        assert q.name == p.name
        assert q == Preset.from_normalized(p.name, n32)  # what the plugin computes from the floats
        # internal -> normalized float32 -> internal moves a value by at most one float32 step
        assert np.all(np.abs(q.internal - p.internal) <= np.spacing(np.abs(p.internal).astype(np.float32)))
    # arrays need a name; long names are cut to 27 bytes
    n = np.linspace(0, 1, 41)
    P.write_fxp_params(tmp_path / "a.fxp", n, name="x" * 40)
    assert P.read_fxp(tmp_path / "a.fxp").name == "x" * 27
    with pytest.raises(PresetError, match="give a name"):
        P.write_fxp_params(tmp_path / "b.fxp", n)


def test_fxp_chunk_round_trip(tmp_path):
    presets = random_presets(40, seed=3)
    presets[0] = dataclasses.replace(presets[0], properties=(("tuning_kbm_file", "/x y.kbm"),))
    for p in presets:
        path = tmp_path / "c.fxp"
        P.write_fxp_chunk(path, p)
        data = path.read_bytes()
        size = struct.unpack(">i", data[56:60])[0]
        assert data[8:12] == b"FPCh" and len(data) == 60 + size and data.endswith(b"\n\0")
        assert data[60:-1].decode() == P.format_preset_text(p)
        assert P.read_fxp(path) == p


@needs_examples
def test_reference_examples():
    text = (EXAMPLES / "random.amSynth").read_text()
    ref = P.read_preset_file(EXAMPLES / "random.amSynth")
    assert ref.name == "random test" and ref.missing == () and ref.properties == ()
    np.testing.assert_array_equal(ref.internal, f32([float(RANDOM_TEXT_VALUES[n]) for n in NAMES]))
    assert P.parse_preset_text(text) == ref
    # FPCh (random_chunk.fxp) and FBCh with a NUL-terminated chunk (random_state.bin): the same text
    assert P.read_fxp(EXAMPLES / "random_chunk.fxp") == ref
    assert P.read_preset_file(EXAMPLES / "random_state.bin") == ref
    # FxCk (random_params.fxp): the normalized float32 of the same preset ...
    data = (EXAMPLES / "random_params.fxp").read_bytes()
    np.testing.assert_array_equal(np.frombuffer(data, ">f4", offset=56), ref.normalized.astype(np.float32))
    # ... which the plugin maps back to internal values one float32 step away in 4 parameters
    fxck = P.read_preset_file(EXAMPLES / "random_params.fxp")
    steps = (fxck.internal - ref.internal) / np.spacing(np.abs(ref.internal).astype(np.float32))
    moved = {NAMES[i]: int(steps[i]) for i in np.flatnonzero(steps)}
    assert moved == {"amp_attack": -1, "amp_release": -1, "filter_env_amount": 1, "osc2_detune": 1}
    # writing that FxCk again reproduces the file byte for byte
    assert P.format_fxp_params(fxck.normalized.astype(np.float32).astype(np.float64), "random test") == data
    # roundtrip_state.bin: DawDreamer save_state (FBCh) after loading it: amsynth's %g, 6 digits
    saved = P.read_fxp(EXAMPLES / "roundtrip_state.bin")
    np.testing.assert_array_equal(saved.internal, f32([float("%g" % v) for v in ref.internal]))
    assert int((saved.internal != ref.internal).sum()) == 22
    # save_state_example.bin: the plugin's state after three set_parameter calls
    state = P.read_fxp(EXAMPLES / "save_state_example.bin")
    assert state.name == "Derren 1"
    changed = {NAMES[i]: state.internal[i] for i in np.flatnonzero(state.internal != f32(AMSYNTH.defaults_internal))}
    assert changed == {"filter_cutoff": f32(0.3), "master_vol": 0.5, "osc2_pitch": 5.0}
    # partial.fxp: a chunk with two parameters; the others take defaults and are listed as missing
    part = P.read_fxp(EXAMPLES / "partial.fxp")
    assert part.name == "partial" and (part.value("filter_cutoff"), part.value("osc2_pitch")) == (0.0, -7.0)
    assert part.missing == tuple(n for n in NAMES if n not in ("filter_cutoff", "osc2_pitch"))
    assert part == Preset.default("partial").with_values(filter_cutoff=0, osc2_pitch=-7)
    # our FPCh of the reference preset carries the same header fields as random_chunk.fxp
    ours, theirs = P.format_fxp_chunk(ref), (EXAMPLES / "random_chunk.fxp").read_bytes()
    assert ours[8:56] == theirs[8:56] and P.parse_fxp(ours) == ref


def test_read_preset_file_dispatches_by_content(tmp_path):
    presets = random_presets(3, seed=4)
    P.write_bank(tmp_path / "bank.txt", presets)
    P.write_bank(tmp_path / "one.fxp", presets[:1])  # the extension does not matter
    P.write_fxp_chunk(tmp_path / "chunk.bank", presets[1])
    P.write_preset_text(tmp_path / "text.bin", presets[2])
    assert P.read_preset_file(tmp_path / "bank.txt", index=2) == presets[2]
    assert P.read_preset_file(tmp_path / "one.fxp") == presets[0]
    assert P.read_preset_file(tmp_path / "chunk.bank") == presets[1]
    assert P.read_preset_file(tmp_path / "text.bin") == presets[2]
    assert P.read_preset_file(tmp_path / "text.bin", index=0) == presets[2]
    path = tmp_path / "bank.txt"
    with pytest.raises(PresetError, match=rf"{path}: the bank holds 3 presets \(0: 'random 0', .*\); pick one "
                       r"with --index K \(0-based, 0..2\)"):
        P.read_preset_file(path)
    with pytest.raises(PresetError, match=r"--index 3 is out of range; the bank holds 3 presets \(0..2\)"):
        P.read_preset_file(path, index=3)
    with pytest.raises(PresetError, match="holds a single preset; drop --index"):
        P.read_preset_file(tmp_path / "text.bin", index=1)
    (tmp_path / "junk").write_bytes(b"hello")
    with pytest.raises(PresetError, match=r"junk: not an amsynth preset; expected a bank"):
        P.read_preset_file(tmp_path / "junk")


def test_atomic_writes_keep_mode_and_leave_no_temp_files(tmp_path):
    path = tmp_path / "p.amSynth"
    p = random_presets(1)[0]
    P.write_preset_text(path, p)
    assert (path.stat().st_mode & 0o777) == 0o644
    os.chmod(path, 0o600)
    P.write_fxp_chunk(path, p)
    assert (path.stat().st_mode & 0o777) == 0o600 and P.read_preset_file(path) == p
    assert os.listdir(tmp_path) == ["p.amSynth"]


# ------------------------------------------------------------------------------ bad input
def text_error(text: str, tmp_path, line: int | None, *match: str) -> str:
    path = tmp_path / "bad.amSynth"
    path.write_text(text)
    with pytest.raises(PresetError) as info:
        P.read_preset_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}, line {line}:" if line else f"{path}"), msg
    for m in match:
        assert m in msg, (m, msg)
    assert info.value.source == str(path) and info.value.line == line
    return msg


def test_bad_preset_text(tmp_path):
    text_error("amSynth1.0presets\n", tmp_path, 1, "expected the header line 'amSynth1.0preset'")
    with pytest.raises(PresetError, match=r"^x.txt, line 3: expected the header line 'amSynth1.0preset', got 'amSy"):
        P.parse_preset_text("\n\namSynth\n<preset> <name> x\n", source="x.txt")
    text_error("amSynth1.0preset\n", tmp_path, 1, "no '<preset> <name> NAME' line")
    text_error("amSynth1.0preset\n<parameter> amp_attack 0\n", tmp_path, 2, "expected '<preset> <name> NAME'")
    text_error(preset_text(name=""), tmp_path, 2, "the preset name is missing")
    text_error(preset_text(params=[("amp_attack", "0.1"), ("amp_decay", "")]), tmp_path, 4,
               "expected '<parameter> NAME VALUE'")
    for value in ("abc", "1.2.3", "0x10", "nan", "inf", "1e", "--1", "1_0"):
        text_error(preset_text(params=[("amp_attack", value)]), tmp_path, 3, f"value {value!r} of 'amp_attack' is not")
    msg = text_error(preset_text(params=[("amp_attack", "0"), ("cutoff", "1")]), tmp_path, 4,
                     "unknown parameter name 'cutoff'", "aborts the whole host process")
    assert "(did you mean 'filter_cutoff'?)" in msg
    text_error(preset_text(params=[("amp_attack", "0"), ("filter_cutoff", "1.6")]), tmp_path, 4,
               "value 1.6 of 'filter_cutoff' is outside its range [-0.5, 1.5]", "would clamp it silently")
    text_error(preset_text(params=[("osc2_pitch", "-12.6")]), tmp_path, 3, "outside its range [-12, 12]")
    text_error(preset_text(params=[("amp_attack", "0"), ("osc_mix", "0"), ("amp_attack", "1")]), tmp_path, 5,
               "'amp_attack' is given twice (first on line 3)")
    text_error(preset_text(extra=["<property> a b", "<parameter> amp_attack 1"]), tmp_path, 5,
               "after a '<property>' line")
    text_error(preset_text(params=[]), tmp_path, 2, "no '<parameter>' line", "hangs the host")
    text_error(preset_text(extra=["hello"]), tmp_path, 4, "unrecognized line 'hello'")
    text_error(preset_text() + "\0junk", tmp_path, 4, "NUL byte")
    # the FPCh chunk: the file name, the chunk and its line
    path = tmp_path / "bad.fxp"
    good = P.format_fxp_chunk(Preset.default("d"))
    path.write_bytes(good.replace(b"osc2_detune", b"osc2_detun_"))
    with pytest.raises(PresetError, match=rf"^{path} \(FPCh chunk\), line 15: unknown parameter name 'osc2_detun_'"):
        P.read_fxp(path)


def bank_error(data: bytes, tmp_path, line: int, *match: str) -> str:
    path = tmp_path / "bad.bank"
    path.write_bytes(data)
    with pytest.raises(PresetError) as info:
        P.read_bank(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}, line {line}:"), msg
    for m in match:
        assert m in msg, (m, msg)
    return msg


def test_bad_bank(tmp_path):
    ok = [("amp_attack", "0.5")]
    for header in ("amsynth", "amSynth ", "amSynth1.0preset"):
        bank_error(bank_bytes(("a", ok), header=header), tmp_path, 1, "not an amsynth bank")
    bank_error(b"amSynth\n<parameter> amp_attack 0\n<preset> <name> a\n", tmp_path, 2,
               "a '<parameter>' line before any '<preset>' line")
    bank_error(bank_bytes(("a", ok), ("", ok)), tmp_path, 4, "the preset name is missing")
    bank_error(b"amSynth\n<preset> <name>\n", tmp_path, 2, "the preset name is missing")
    bank_error(bank_bytes(("a", [("amp_attack", "0.1"), ("amp_decay", "x1")])), tmp_path, 4,
               "value 'x1' of 'amp_decay' is not a number")
    bank_error(bank_bytes(("a", [("amp_attack", "")])), tmp_path, 3, "no value in")
    bank_error(b"amSynth\n<preset> <name> a\n<parameter> amp_attack\n", tmp_path, 3, "no value in")
    bank_error(bank_bytes(("a", [("bogus", "1")])), tmp_path, 3, "unknown parameter name 'bogus'", "aborts")
    bank_error(bank_bytes(("a", [("unused", "1")])), tmp_path, 3, "unknown parameter name 'unused'",
               "its bank reader aborts on it")
    bank_error(bank_bytes(("a", ok), ("b", [("amp_sustain", "1.01")])), tmp_path, 5,
               "value 1.01 of 'amp_sustain' is outside its range [0, 1]")
    bank_error(bank_bytes(("a", [("osc_mix", "1E-3")])), tmp_path, 3, "uppercase 'E'",
               "would read it as 13")
    bank_error(b"amSynth\n<preset> <name> a\n<parameter> osc_mix  -0.5\n", tmp_path, 3, "space before the value")
    bank_error(bank_bytes(("a", ok), ("a", ok + ok)), tmp_path, 6, "'amp_attack' is given twice")
    bank_error(bank_bytes(("a", ok)) + b"<parameter> amp_decay 1", tmp_path, 5, "has no newline")
    bank_error(bank_bytes(("a", ok)).replace(b"<preset> <name>", b"<preset>  <name>"), tmp_path, 2,
               "unrecognized line '<preset>  <name> a'", "wrong preset")
    bank_error(bank_bytes(("a", ok)).replace(b"\n<param", b"\r\n<param"), tmp_path, 2, "carriage return")
    bank_error(bank_bytes(("a", ok)).replace(b"EOF", b"E\0F"), tmp_path, 4, "NUL byte")
    many = bank_bytes(*[(f"p{k}", ok) for k in range(129)])
    bank_error(many, tmp_path, 2 + 128 * 2, "more than 128 presets")
    # accepted: blank lines, EOF anywhere (amsynth reads on), a missing final newline after EOF,
    # a trailing space after a value, exponents with a lowercase e
    fine = b"amSynth\n\n<preset> <name> a\n<parameter> osc_mix -1.5e-1 \nEOF\n<preset> <name> b\nEOF"
    a, b = P.parse_bank_text(fine)
    assert a.value("osc_mix") == float(np.float32(-0.15)) and b.name == "b"


def fxp_error(data: bytes, tmp_path, *match: str) -> str:
    path = tmp_path / "bad.fxp"
    path.write_bytes(data)
    with pytest.raises(PresetError) as info:
        P.read_fxp(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for m in match:
        assert m in msg, (m, msg)
    return msg


def test_bad_fxp(tmp_path):
    p = random_presets(2, seed=5)[1]
    fxck, fpch = P.format_fxp_params(p), P.format_fxp_chunk(p)

    def patch(data: bytes, offset: int, value: bytes) -> bytes:
        return data[:offset] + value + data[offset + len(value):]

    fxp_error(b"CcnK", tmp_path, "truncated: 4 bytes")
    fxp_error(fxck[:-1], tmp_path, "(byte 4)", "byteSize field says 220 bytes but the file has 219")
    fxp_error(patch(fxck[:-4], 4, struct.pack(">i", 208)), tmp_path, "FxCk of 216 bytes, expected 220 (truncated)")
    fxp_error(fxck + b"\0", tmp_path, "byteSize")
    fxp_error(patch(fxck, 0, b"RIFF"), tmp_path, "(byte 0): wrong magic b'RIFF'")
    fxp_error(patch(fxck, 16, b"Dexd"), tmp_path, "(byte 16): made for the plugin with ID b'Dexd'")
    fxp_error(patch(fxck, 24, struct.pack(">i", 40)), tmp_path, "(byte 24): FxCk with 40 parameters")
    fxp_error(patch(fxck, 12, struct.pack(">i", 2)), tmp_path, "(byte 12): format version 2")
    fxp_error(patch(fxck, 8, b"FxBk"), tmp_path, "(byte 8): an FxBk bank")
    fxp_error(patch(fxck, 8, b"Abcd"), tmp_path, "(byte 8): unknown .fxp kind b'Abcd'")
    fxp_error(patch(fxck, 56 + 4 * 11, struct.pack(">f", 1.5)), tmp_path,
              "(byte 100): parameter 'filter_cutoff' has normalized value 1.5, outside [0, 1]")
    fxp_error(patch(fxck, 56, struct.pack(">f", float("nan"))), tmp_path, "(byte 56): parameter 'amp_attack'")
    fxp_error(patch(fpch[:-10], 4, struct.pack(">i", len(fpch) - 18)), tmp_path, "(byte 56): truncated FPCh")
    fxp_error(patch(fpch[:50], 4, struct.pack(">i", 42)), tmp_path, "truncated FPCh: 50 bytes")
    fxp_error(patch(patch(fpch, 56, struct.pack(">i", 0))[:60], 4, struct.pack(">i", 52)), tmp_path,
              "inconsistent FPCh: chunkSize 0")
    fxp_error(patch(fpch, 60, b"amSynth1.0presex"), tmp_path, "(FPCh chunk), line 1: expected the header")
    # a JUCE-written byteSize of 0 is accepted
    assert P.parse_fxp(patch(fpch, 4, b"\0\0\0\0")) == p


def test_factory_banks_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere is missing; install amsynth \(`sudo apt-get install "
                       r"amsynth`, or run our `bash scripts/setup.sh`\)"):
        P.load_factory_banks(tmp_path / "nowhere")
    (tmp_path / "README").write_text("not a bank")
    with pytest.raises(FileNotFoundError, match="no amsynth bank files in"):
        P.load_factory_banks(tmp_path)
    P.write_bank(tmp_path / "b.bank", random_presets(3, seed=6))
    fp = P.load_factory_banks(tmp_path)  # non-bank files are skipped, as amsynth does
    assert len(fp) == 3 and fp.bank_indices.tolist() == [0, 1, 2] and fp.present.all()


def test_amsynth_bank_number_parser_emulation():
    # amsynth's hand-written parser: only a leading '-', digits and '.', float32 arithmetic
    assert P._amsynth_bank_float("1E-3") == 13.0
    assert P._amsynth_bank_float("-1.5") == -1.5
    assert P._amsynth_bank_float(" -0.5") == 0.5  # a '-' that does not come first is ignored
    assert P._amsynth_bank_float("1e-3") == float(np.float32(1e-3))
    x = P._amsynth_bank_float("0.0333333")
    assert abs(x - float(np.float32(0.0333333))) <= 3 * np.spacing(np.float32(0.0333333))


# ---------------------------------------------------------------------- the real plugin
SR = 22050
RENDER_S = 0.5


def _render(amsynth_path: str, normalized=None, fxp=None):
    """README §10 protocol in a fresh instance: LFO polarity, values, warm-up, load_graph, render."""
    import dawdreamer as daw

    engine = daw.RenderEngine(SR, 512)
    synth = engine.make_plugin_processor("amsynth_presets", amsynth_path)
    engine.load_graph([(synth, [])])
    synth.set_parameter(AMSYNTH.index_of("lfo_waveform"), 5 / 6)
    if normalized is not None:
        for i, n in enumerate(normalized):
            synth.set_parameter(i, float(n))
    if fxp is not None:
        assert synth.load_preset(str(fxp)), f"DawDreamer refused {fxp}"
    synth.clear_midi()
    synth.add_midi_note(57, 100, 0.0, 0.3)
    engine.render(RENDER_S)
    engine.load_graph([(synth, [])])
    engine.render(RENDER_S)
    texts = [synth.get_parameter_text(i) for i in range(AMSYNTH.n_params)]
    return np.asarray(engine.get_audio()), texts


def _plugin_test_presets() -> list[Preset]:
    out = [P.read_preset_file(EXAMPLES / "random.amSynth")] if EXAMPLES.is_dir() else []
    rng = np.random.default_rng(7)
    norm = AMSYNTH.sample_normalized(rng, 40)
    out += [Preset.from_normalized(f"r{k}", n) for k, n in enumerate(norm[~uses_noise(norm)][:1])]
    if FACTORY.is_dir():
        fp = P.load_factory_banks()
        quiet = np.flatnonzero(~uses_noise(fp.normalized))
        out.append(fp.preset(int(quiet[1000])))
    return out


@pytest.mark.plugin
def test_written_fxp_render_like_set_parameter(amsynth_path, tmp_path):
    """FxCk loads bit-identically to set_parameter; FPCh sets the exact internal values."""
    worst_fpch = 0.0
    for k, p in enumerate(_plugin_test_presets()):
        n32 = p.normalized.astype(np.float32)
        direct, direct_text = _render(amsynth_path, normalized=n32)
        assert np.sqrt(np.mean(direct**2)) > 1e-3, f"{p.name}: silent render"
        P.write_fxp_params(tmp_path / f"{k}_params.fxp", p)
        fxck, fxck_text = _render(amsynth_path, fxp=tmp_path / f"{k}_params.fxp")
        np.testing.assert_array_equal(fxck, direct, err_msg=f"{p.name}: FxCk differs from set_parameter")
        assert fxck_text == direct_text
        P.write_fxp_chunk(tmp_path / f"{k}_chunk.fxp", p)
        fpch, fpch_text = _render(amsynth_path, fxp=tmp_path / f"{k}_chunk.fxp")
        worst_fpch = max(worst_fpch, float(np.max(np.abs(fpch - direct))))
        # the plugin shows the control values of exactly our internal values (%g of float32)
        assert fpch_text == ["%g" % c for c in AMSYNTH.internal_to_control(p.internal)], p.name
    assert worst_fpch <= 3e-7


@pytest.mark.plugin
@needs_examples
def test_partial_chunk_keeps_the_plugins_current_values(amsynth_path, tmp_path):
    """Why ``Preset.missing`` exists: a chunk without some parameters leaves them as they were."""
    import dawdreamer as daw

    engine = daw.RenderEngine(SR, 512)
    synth = engine.make_plugin_processor("amsynth_partial", amsynth_path)
    before = Preset.from_normalized("before", np.full(41, 0.25))
    for i, n in enumerate(before.normalized):
        synth.set_parameter(i, float(n))
    assert synth.load_preset(str(EXAMPLES / "partial.fxp"))
    part = P.read_fxp(EXAMPLES / "partial.fxp")
    expected = np.where([n in part.missing for n in NAMES], before.internal, part.internal)
    assert [synth.get_parameter_text(i) for i in range(41)] == ["%g" % c for c in AMSYNTH.internal_to_control(expected)]


@pytest.mark.plugin
def test_host_renders_preset_files_like_their_values(amsynth_path, tmp_path):
    """``proxies.host.render(fxp=...)`` reads every format through this module (same audio)."""
    host = pytest.importorskip("proxies.host")
    import inspect

    if "fxp" not in inspect.signature(host.render).parameters:
        pytest.skip("proxies.host.render has no fxp= argument")
    p = _plugin_test_presets()[0]
    kw = dict(notes=host.Note(57, 100, 0.0, 0.3), duration_s=RENDER_S, sample_rate=SR)
    direct = host.render("amsynth", normalized=p.normalized, **kw)
    assert np.sqrt(np.mean(direct**2)) > 1e-3
    P.write_fxp_params(tmp_path / "p.fxp", p)
    P.write_fxp_chunk(tmp_path / "c.fxp", p)
    P.write_bank(tmp_path / "one.bank", [p])
    P.write_preset_text(tmp_path / "t.amSynth", p)
    for name in ("p.fxp", "c.fxp", "one.bank", "t.amSynth"):
        np.testing.assert_array_equal(host.render("amsynth", fxp=tmp_path / name, **kw), direct, err_msg=name)
