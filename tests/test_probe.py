"""The VST probe (proxies.probe) and probed-spec synths (proxies.vst): Nekobi probed for real,
the JSON through vst_synth, the engine through the synth seam, malformed specs, the
reproducibility check, argument validation, and the display-text classification rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from proxies import probe as PR
from proxies import vst as V
from proxies.notes import Note
from proxies.synth import get_synth

NEKOBI_VST = "/usr/lib/vst/Nekobi-vst.so"
REPO = Path(__file__).resolve().parents[1]
SR = 16000
NAMES = ("Waveform", "Tuning", "Cutoff", "VCF Resonance", "Env Mod", "Decay", "Accent", "Volume")

needs_nekobi = pytest.mark.skipif(not os.path.exists(NEKOBI_VST),
                                  reason=f"{NEKOBI_VST} missing: sudo apt-get install dpf-plugins-vst")


@pytest.fixture(autouse=True)
def _keep_fp_env():
    """Loading Nekobi in this process sets flush-to-zero for good: keep it from leaking into other tests."""
    from proxies.probe import preserve_fp_env

    with preserve_fp_env():
        yield


@pytest.fixture(scope="module")
def probed(tmp_path_factory) -> tuple[Path, dict, str]:
    """Nekobi probed once through the CLI entry point (16 kHz, 2 random presets)."""
    if not os.path.exists(NEKOBI_VST):
        pytest.skip(f"{NEKOBI_VST} missing: sudo apt-get install dpf-plugins-vst")
    out = tmp_path_factory.mktemp("probe") / "nekobi.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = PR.main([NEKOBI_VST, "--out", str(out), "--sr", str(SR), "--presets", "2"])
    assert rc == 0
    return out, json.loads(out.read_text()), buf.getvalue()


# ------------------------------------------------------------------------------ the probe
@pytest.mark.plugin
def test_probe_nekobi(probed):
    path, spec, printed = probed
    assert spec["format"] == 1 and spec["plugin"] == NEKOBI_VST and spec["plugin_id"] == "DNek"
    assert spec["n_params"] == 8 and spec["channels"] == 1 and spec["sample_rate"] == SR
    params = spec["parameters"]
    assert tuple(p["name"] for p in params) == NAMES and [p["index"] for p in params] == list(range(8))
    kinds = {p["name"]: p["kind"] for p in params}
    assert kinds == {n: "categorical" if n == "Waveform" else "continuous" for n in NAMES}
    wave = params[0]
    assert wave["choices"] == [{"name": "Square", "normalized": 0.0}, {"name": "Triangle", "normalized": 1.0}]
    assert wave["default_normalized"] == 0.0
    units = {p["name"]: p["unit"] for p in params}
    assert all(units[n] == "%" for n in NAMES[2:]) and units["Tuning"] == ""
    res = params[3]
    assert (res["display_min"], res["display_max"]) == (0.0, 95.0)
    assert (params[1]["display_min"], params[1]["display_max"]) == (-12.0, 12.0)
    assert params[1]["default_normalized"] == 0.5 and params[7]["default_normalized"] == 0.75
    assert {p["name"] for p in params if p["prior"] == "fixed"} == {"Tuning", "Volume"}
    assert "Tuning: prior 'fixed'" in printed and "Volume: prior 'fixed'" in printed
    # Nekobi carries state from render to render; a fresh instance per preset is exact
    rep = spec["reproducibility"]
    assert spec["reproducible"] is True and spec["fresh_instance"] is True
    assert rep["same_host_max_diff"] > 1e-3 and rep["fresh_instance_max_diff"] == 0.0
    assert rep["fresh_process_max_diff"] == 0.0 and rep["presets"] == 3 and rep["peak"] > 0.01
    assert "reproducible: True with a fresh plugin instance per preset" in printed
    # the file is the readable layout (one key per line, short lists inline) and parses strictly
    text = path.read_text()
    assert '\n      "choices": [{"name": "Square", "normalized": 0.0}, {"name": "Triangle", "normalized": 1.0}],\n' in text
    assert V.load_spec(path).spec.names == NAMES
    # loading Nekobi sets flush-to-zero in the loading thread; the probe restores it
    assert np.spacing(np.float32(0)) > 0


@pytest.mark.plugin
def test_probed_json_through_vst_synth(probed):
    path, spec, _ = probed
    synth = get_synth(f"vst:{NEKOBI_VST}", path)
    assert synth.name == f"vst:{NEKOBI_VST}" and synth.channels == 1 and synth.proxy is None
    s = synth.spec
    assert s.names == NAMES and s.categorical_indices == (0,) and s["Waveform"].choices == ("Square", "Triangle")
    assert s.learned_indices == (0, 2, 3, 4, 5, 6)
    np.testing.assert_array_equal(s.defaults_normalized, [p["default_normalized"] for p in spec["parameters"]])
    assert s["Cutoff"].unit == "%" and (s["Cutoff"].minimum, s["Cutoff"].maximum, s["Cutoff"].step) == (0, 1, 0)
    assert synth.spectral_params == () and synth.plugin.fresh_voices is V.fresh_voice
    rows = synth.sample_presets(np.random.default_rng(0), 50)
    assert set(np.unique(rows[:, 0])) <= {0.0, 1.0} and np.all(rows[:, 1] == 0.5) and np.all(rows[:, 7] == 0.75)
    assert synth.reproducible(rows).all()
    # the shipped (reviewed) spec describes the same parameters, kinds, choices and priors
    shipped = get_synth("nekobi").spec
    assert shipped.names == s.names and shipped.categorical_indices == s.categorical_indices
    assert [p.prior for p in shipped] == [p.prior for p in s] and shipped["Waveform"].choices == ("Square", "Triangle")
    np.testing.assert_array_equal(shipped.defaults_normalized, s.defaults_normalized)


@pytest.mark.plugin
@needs_nekobi
def test_nekobi_engine_renders_and_is_deterministic():
    synth = get_synth("nekobi")
    assert synth.name == "nekobi" and synth.presets.write_suffix == ".fxp"
    presets = synth.sample_presets(np.random.default_rng(5), 4)
    notes = (Note(45, 110, 0.0, 0.25),)
    engine = synth.open_engine(SR, workers=1)
    try:
        assert engine.channels == synth.channels == 1 and engine.sample_rate == SR
        a, fail = engine.render(presets, notes, 0.4)
        b, fail2 = engine.render(presets[::-1], notes, 0.4)
        assert fail == [] and fail2 == [] and a.shape == (4, 1, 6400) and a.dtype == np.float32
        assert np.abs(a).max() > 0.01
        np.testing.assert_array_equal(a, b[::-1])  # whatever came before
        assert engine.reproducible(presets).all()
    finally:
        engine.close()
    # the same audio in this process (host.render gives each preset a fresh instance)
    from proxies import host

    for k in (2, 0):
        np.testing.assert_array_equal(
            host.render(synth.plugin, presets[k], notes=notes, duration_s=0.4, sample_rate=SR), a[k])


def test_check_reproducibility_flags_an_injected_difference(monkeypatch):
    if not os.path.exists(NEKOBI_VST):
        pytest.skip(f"{NEKOBI_VST} missing")
    spec = get_synth("nekobi").spec
    rows = np.stack([spec.defaults_normalized, spec.snap_normalized(np.full(8, 0.8))])
    real = PR._render_fresh_process

    def differs(*args, **kwargs):
        out = real(*args, **kwargs).copy()
        out[0, 0, 100] += 1e-3
        return out

    monkeypatch.setattr(PR, "_render_fresh_process", differs)
    rep = PR.check_reproducibility(NEKOBI_VST, SR, rows, hold_s=0.1, duration_s=0.2)
    assert rep["reproducible"] is False and rep["fresh_instance"] is False
    assert rep["fresh_process_max_diff"] == pytest.approx(1e-3, rel=1e-3) and rep["fresh_instance_max_diff"] == 0.0
    monkeypatch.setattr(PR, "_render_fresh_process", lambda *a, **k: np.full_like(real(*a, **k), np.nan))
    rep = PR.check_reproducibility(NEKOBI_VST, SR, rows[:1], hold_s=0.1, duration_s=0.2)
    assert rep["reproducible"] is False and rep["fresh_process_max_diff"] is None


# ------------------------------------------------------------------------- spec validation
def _shipped() -> dict:
    return json.loads(Path(V.NEKOBI_SPEC).read_text())


def _spec_error(tmp_path, data, *match: str) -> str:
    path = tmp_path / "spec.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(V.SpecError) as info:
        V.vst_synth(NEKOBI_VST, path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for m in match:
        assert m in msg, (m, msg)
    return msg


def test_malformed_spec_errors(tmp_path):
    d = _shipped()
    d["reproducable"] = True
    _spec_error(tmp_path, d, "top level: unknown key 'reproducable'", "did you mean 'reproducible'?")
    d = _shipped()
    d["parameters"][2]["defualt_normalized"] = 0.3
    _spec_error(tmp_path, d, "parameters[2]: unknown key 'defualt_normalized'", "did you mean 'default_normalized'")
    d = _shipped()
    d["n_params"] = 9
    _spec_error(tmp_path, d, "n_params: 9, but 'parameters' lists 8")
    d = _shipped()
    d["parameters"][3]["index"] = 4
    _spec_error(tmp_path, d, "parameters[3] ('VCF Resonance').index: 4, but it is entry 3")
    d = _shipped()
    d["parameters"][2]["prior"] = "random"
    _spec_error(tmp_path, d, "parameters[2] ('Cutoff').prior: expected one of 'uniform', 'fixed'")
    d = _shipped()
    d["parameters"][5]["default_normalized"] = "0.5"
    _spec_error(tmp_path, d, "('Decay').default_normalized: expected a number in [0, 1]", "got a string")
    d = _shipped()
    d["parameters"][0]["choices"][1]["normalized"] = 0.6
    _spec_error(tmp_path, d, "parameters[0] ('Waveform').choices[1].normalized: 0.6", "1/1 = 1")
    d = _shipped()
    d["parameters"][4]["choices"] = [{"name": "a", "normalized": 0}]
    _spec_error(tmp_path, d, "('Env Mod').choices: only a 'categorical' parameter has choices")
    d = _shipped()
    d["parameters"][6]["kind"] = "fixed"
    _spec_error(tmp_path, d, "('Accent').prior: a parameter of kind 'fixed' needs prior 'fixed'")
    d = _shipped()
    d["channels"] = "mono"
    _spec_error(tmp_path, d, "channels: expected an integer >= 1")
    d = _shipped()
    del d["reproducible"]
    _spec_error(tmp_path, d, "missing key 'reproducible'")
    d = _shipped()
    d["plugin_id"] = "Nekobi"
    _spec_error(tmp_path, d, "plugin_id: expected a 4-character VST2 ID")
    d = _shipped()
    d["parameters"][1]["name"] = "Cutoff"
    _spec_error(tmp_path, d, "duplicate parameter names", "['Cutoff']")
    _spec_error(tmp_path, '{"channels": 1,', "not valid JSON (line 1")
    _spec_error(tmp_path, "[1, 2]", "expected a JSON object")


@pytest.mark.plugin
@needs_nekobi
def test_spec_with_the_wrong_parameter_count_fails_at_engine_open(tmp_path):
    d = _shipped()
    d["parameters"] = d["parameters"][:7]
    d["n_params"] = 7
    path = tmp_path / "seven.json"
    path.write_text(json.dumps(d))
    synth = V.vst_synth(NEKOBI_VST, path)  # reading the JSON does not touch the plugin
    with pytest.raises(RuntimeError, match="reports 8 parameters but the Nekobi spec declares 7"):
        synth.open_engine(SR, workers=1)


def test_spec_lookup_and_missing_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plugin = tmp_path / "Thing-vst.so"
    plugin.write_bytes(b"\x7fELF")
    with pytest.raises(V.SpecError) as info:
        get_synth(f"vst:{plugin}")
    msg = str(info.value)
    assert f"python -m proxies.probe {plugin} --out" in msg and str(tmp_path / "Thing-vst.json") in msg
    cached = tmp_path / "cache" / "synthprog" / "specs" / "Thing-vst.json"
    cached.parent.mkdir(parents=True)
    shutil.copy(V.NEKOBI_SPEC, cached)
    assert V.find_spec(plugin) == str(cached)
    shutil.copy(V.NEKOBI_SPEC, tmp_path / "Thing-vst.json")  # next to the plugin wins
    assert V.find_spec(plugin) == str(tmp_path / "Thing-vst.json")
    synth = get_synth(f"vst:{plugin}")
    assert synth.spec.n_params == 8 and synth.plugin.default_path == str(plugin)


def test_unreproducible_spec():
    d = _shipped()
    d.update(reproducible=False, fresh_instance=False)
    d["reproducibility"] = {"same_host_max_diff": 0.5, "fresh_instance_max_diff": 0.25,
                            "fresh_process_max_diff": 1.25}
    vs = V.parse_spec(d, "x.json")
    assert (vs.reproducible, vs.fresh_instance, vs.max_diff) == (False, False, 1.25)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.json"
        path.write_text(json.dumps(d))
        synth = V.vst_synth(NEKOBI_VST, path)
    assert not synth.reproducible(np.zeros((3, 8))).any()
    assert "NOT reproducible" in synth.description and "1.25" in synth.description
    assert synth.plugin.uses_noise is not None and synth.plugin.fresh_voices is None


def test_import_loads_no_plugin():
    code = ("import sys, proxies.vst, proxies.probe; from proxies.synth import get_synth; s = get_synth('nekobi'); "
            "assert 'dawdreamer' not in sys.modules, 'dawdreamer imported'; print(s.spec.n_params)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "8", out.stderr


# -------------------------------------------------------------------------- the CLI's checks
def _cli(argv, capsys) -> tuple[int, str]:
    rc = PR.main(argv)
    return rc, capsys.readouterr().err


def test_cli_argument_errors(tmp_path, capsys):
    rc, err = _cli([str(tmp_path / "nope.so"), "--out", str(tmp_path / "x.json")], capsys)
    assert rc == 2 and "nope.so not found" in err
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    rc, err = _cli([str(text), "--out", str(tmp_path / "x.json")], capsys)
    assert rc == 2 and "is not a plugin: expected a file or bundle ending in .so" in err
    fake = tmp_path / "fake.so"
    fake.write_text("not a library")
    rc, err = _cli([str(fake), "--out", str(tmp_path / "x.json")], capsys)
    assert rc == 2 and "not a shared library" in err
    plugin = NEKOBI_VST if os.path.exists(NEKOBI_VST) else str(fake)
    rc, err = _cli([plugin, "--out", str(tmp_path / "missing" / "x.json")], capsys)
    assert rc == 2 and "does not exist; create it first" in err
    rc, err = _cli([plugin, "--out", str(tmp_path)], capsys)
    assert rc == 2 and "is a folder" in err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        rc, err = _cli([plugin, "--out", str(ro / "x.json")], capsys)
        assert rc == 2 and "not writable" in err
    rc, err = _cli([plugin, "--out", str(tmp_path / "x.json"), "--sr", "100"], capsys)
    assert rc == 2 and "--sr: unsupported sample rate 100" in err
    with pytest.raises(SystemExit) as info:  # argparse: --out is required
        PR.main([plugin])
    assert info.value.code == 2
    assert not (tmp_path / "x.json").exists()


@pytest.mark.plugin
def test_cli_not_a_plugin_dawdreamer_loads(tmp_path):
    """A real shared library that is no plugin: exit status 2 from ``python -m proxies.probe``."""
    lib = next((p for p in ("/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1",
                            "/usr/lib/aarch64-linux-gnu/libz.so.1") if os.path.exists(p)), None)
    if lib is None:
        pytest.skip("no libz.so.1 to try")
    fake = tmp_path / "libz.so"
    shutil.copy(lib, fake)
    out = subprocess.run([sys.executable, "-m", "proxies.probe", str(fake), "--out", str(tmp_path / "z.json")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "is not a plugin DawDreamer can load" in out.stderr and not (tmp_path / "z.json").exists()


# --------------------------------------------------------------------- classification rules
def _grid(points: int = 33) -> np.ndarray:
    return np.linspace(0, 1, PR.FINE * (points - 1) + 1)


def test_parse_display():
    assert PR.parse_display("440.0 Hz") == (440.0, "Hz")
    assert PR.parse_display("-12.000000") == (-12.0, "")
    assert PR.parse_display("25%") == (25.0, "%")
    assert PR.parse_display("-inf dB") == (-np.inf, "dB")
    assert PR.parse_display("Square") == (None, "")
    assert PR.parse_display("2 voices per key") == (None, "")


def test_classify_rules():
    g = _grid()
    # non-numeric texts in runs -> categorical; every grid value checked against the plugin
    texts = ["Saw" if x < 1 / 3 else "Pulse" if x < 2 / 3 else "Noise" for x in g]
    shown = lambda x: "Saw" if x < 1 / 3 else "Pulse" if x < 2 / 3 else "Noise"  # noqa: E731
    e, notes = PR.classify("Wave", 0, texts, g, text_at=shown)
    assert e["kind"] == "categorical" and [c["name"] for c in e["choices"]] == ["Saw", "Pulse", "Noise"]
    assert [c["normalized"] for c in e["choices"]] == [0.0, 0.5, 1.0] and notes == []
    # a grid that misses a choice keeps the parameter continuous, with a note
    e, notes = PR.classify("Wave", 0, texts, g, text_at=lambda x: "Saw")
    assert e["kind"] == "continuous" and "does not select them" in notes[0]
    # integers in steps (Kars' Sustain: "0.000000" / "1.000000") -> categorical, numeric names
    texts = ["0.000000" if x <= 0.5 else "1.000000" for x in g]
    e, _ = PR.classify("Sustain", 0, texts, g, text_at=lambda x: "0.000000" if x <= 0.5 else "1.000000")
    assert e["kind"] == "categorical" and [c["name"] for c in e["choices"]] == ["0", "1"]
    # fractional numbers -> continuous with the display range and the text's unit; kHz shown as Hz
    texts = [f"{20 * 1000 ** x:.1f} Hz" if 20 * 1000 ** x < 1000 else f"{20 * 1000 ** x / 1000:.2f} kHz" for x in g]
    e, _ = PR.classify("Cutoff", 0, texts, g)
    assert e["kind"] == "continuous" and e["unit"] == "Hz" and e["display_min"] == 20.0 and e["display_max"] == 20000.0
    # an integer display of a continuous control: the finer sweep finds values the coarse one missed
    texts = [f"{round(100 * x)}" for x in g]
    assert PR.classify("Level", 0, texts, g, label="%")[0]["kind"] == "continuous"
    # "Off" then milliseconds -> continuous, numbers give the range
    texts = ["Off" if x == 0 else f"{x * 1000:.1f} ms" for x in g]
    e, _ = PR.classify("Delay", 0, texts, g)
    assert e["kind"] == "continuous" and e["unit"] == "ms" and e["display_max"] == 1000.0
    # constant text -> fixed (unless no parameter shows text at all)
    e, notes = PR.classify("Dummy", 0, ["x"] * len(g), g)
    assert e["kind"] == "fixed" and e["prior"] == "fixed" and "never changes" in notes[0]
    assert PR.classify("Dummy", 0, ["x"] * len(g), g, texts_vary_elsewhere=False)[0]["kind"] == "continuous"
    # repeated names become unique
    texts = ["Off" if x < 0.3 else "On" if x < 0.6 else "Off" for x in g]
    e, _ = PR.classify("Mode", 0, texts, g)
    assert [c["name"] for c in e["choices"]] == ["Off", "On", "Off (2)"]


def test_fixed_by_name():
    for name in ("Volume", "Master Volume", "Output Gain", "Gain", "Tuning", "Master Tune", "Fine Tune", "Bypass",
                 "Polyphony", "Pitch Bend Range", "MIDI Channel", "Transpose"):
        assert PR.fixed_by_name(name), name
    for name in ("Cutoff", "Osc 2 Tune", "Osc1 Level", "Env Mod", "Decay", "Accent", "Filter Env Amount",
                 "Release", "Sustain", "LFO Gain"):
        assert PR.fixed_by_name(name) is None, name
