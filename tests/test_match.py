"""Sound matching end to end (``python -m training.match``) with a tiny trained run: an in-domain
target (a factory preset rendered by the real plugin: the human-preset candidates find it) and
sounds no amsynth made (a Karplus-Strong pluck as 22.05 kHz stereo flac, a Faust FM/saw voice
played by DawDreamer as 44.1 kHz mono 24-bit wav, a short inharmonic bell as 32 kHz ogg), each
judged whole at its own rate; a folder of sounds with its gallery page, resumed; the written
preset loads and renders what was reported; no stage makes the reported distance worse or trades
the sound for silence; bad inputs fail clearly, early.

The tiny run is trained once per pytest session (shared with tests/test_evaluate.py when both
files run together), and so is the proxy's compiled gradient (every target here plays note 60).

The first run on a machine compiles the proxy's gradient (minutes on a loaded CPU); later runs
reuse JAX's persistent compilation cache (``~/.cache/synthprog/jax``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RUN_NAME = "tiny-match"
TINY_OVERRIDES = [
    "data.n_train=64", "data.n_val=8", "data.n_test=8", "data.duration_s=0.5", "data.hold_s=0.3",
    "data.shard_size=64", "loss.schedule=param", "loss.fft_sizes=[128,256,512,1024]", "optim.steps=20",
    "optim.batch_size=16", "optim.log_every=10", "optim.eval_every=20", "optim.checkpoint_every=20",
    "eval.n_random=4", "eval.n_factory=2", "eval.val_distance=param", "eval.batch_size=8",
    "eval.proxy_search_rounds=2", "eval.proxy_search_candidates=4", "eval.best_of_k=4", "eval.proxy_refine_steps=0",
    "eval.lookup_candidates=2",
]


def ensure_tiny_run(base: Path) -> Path:
    """Train (once per pytest session) a tiny run with ``training.fit``: 64 plugin renders,
    20 steps of parameter loss, 0.5 s at 16 kHz, note 60."""
    run = base / "runs" / RUN_NAME
    if (run / "summary.json").is_file():
        return run
    cmd = [sys.executable, "-m", "training.fit", "--config", str(ROOT / "configs" / "amsynth.toml"), "--no-progress",
           "--set", f"run.name={RUN_NAME}", "--set", f"run.runs_dir={base / 'runs'}",
           "--set", f"data.cache_dir={base / 'data'}"]
    for o in TINY_OVERRIDES:
        cmd += ["--set", o]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"tiny fit failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert (run / "summary.json").is_file()
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return ensure_tiny_run(tmp_path_factory.getbasetemp() / "tiny")


# ------------------------------------------------------------------------------ targets
def factory_target(path: Path, sample_rate: int = 16000, duration_s: float = 1.0) -> tuple[str, np.ndarray]:
    """A clean (noise-free) factory preset rendered by the real plugin at note 60, as a float wav."""
    from proxies.amsynth.presets import load_factory_banks
    from proxies.amsynth.spec import uses_noise
    from proxies.host import Note, render

    fp = load_factory_banks()
    i = next(i for i in range(100, len(fp)) if not uses_noise(fp.normalized[i][None])[0])
    audio = render("amsynth", fp.normalized[i], notes=[Note(60, 100, 0.0, 0.3)], duration_s=duration_s,
                   sample_rate=sample_rate)
    sf.write(path, audio.T, sample_rate, subtype="FLOAT")
    return fp.names[i], fp.normalized[i]


def karplus_strong(path: Path, f0_hz: float = 261.63, sample_rate: int = 22050, duration_s: float = 0.4,
                   seed: int = 0) -> None:
    """A plucked string (Karplus-Strong: a noise burst in a delay line with a two-tap averaging loop
    filter), stereo with a quieter right channel, as a 22.05 kHz flac."""
    rng = np.random.default_rng(seed)
    period = int(round(sample_rate / f0_hz))
    line = rng.uniform(-1.0, 1.0, period)
    out = np.empty(int(duration_s * sample_rate))
    for t in range(len(out)):
        k = t % period
        out[t] = line[k]
        line[k] = 0.996 * 0.5 * (line[k] + line[(k + 1) % period])
    out *= 0.5 / np.max(np.abs(out))
    sf.write(path, np.stack([out, 0.8 * out], axis=1), sample_rate, format="FLAC")


FAUST_DSP = """
import("stdfaust.lib");
f = 261.63;
gate = button("gate");
env = en.adsr(0.01, 0.3, 0.5, 0.25, gate);
fm = os.osc(f * (1.0 + 0.002 * os.osc(5.0)) + 2.0 * f * env * os.osc(2.0 * f));
saw = os.sawtooth(f * 1.003);
process = (0.5 * fm + 0.3 * saw) : fi.resonlp(600.0 + 4000.0 * env, 3.0, 1.0) : *(env * 0.8);
"""


def faust_synth(path: Path, sample_rate: int = 44100, duration_s: float = 0.8, hold_s: float = 0.45) -> None:
    """A sound from another synth: a Faust FM + saw voice (vibrato, resonant low-pass swept by its
    ADSR) compiled and played by DawDreamer's Faust processor, written as a 44.1 kHz mono 24-bit wav."""
    import dawdreamer as daw

    engine = daw.RenderEngine(sample_rate, 128)
    faust = engine.make_faust_processor("faust")
    assert faust.set_dsp_string(FAUST_DSP), "Faust did not compile the test voice"
    n = int(duration_s * sample_rate)
    gate = np.zeros(n)
    gate[:int(hold_s * sample_rate)] = 1.0
    faust.set_automation("/dawdreamer/gate", gate)
    engine.load_graph([(faust, [])])
    engine.render(duration_s)
    audio = np.asarray(engine.get_audio(), np.float64)
    assert audio.shape[0] == 1 and np.isfinite(audio).all() and np.max(np.abs(audio)) > 0.05
    sf.write(path, audio[0, :n], sample_rate, subtype="PCM_24")


def _run_match(argv: list[str], capsys) -> tuple[int, str, str]:
    from training.match import main

    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _check_outputs(out: Path, report: dict, sample_rate: int) -> None:
    """The preset files load (our parser; the plugin) and render exactly the reported wav."""
    from proxies.amsynth.presets import read_preset_file
    from proxies.amsynth.spec import uses_noise
    from proxies.host import Note, render

    for suffix in (".amSynth", ".fxp", ".wav", ".png", ".json"):
        assert out.with_suffix(suffix).is_file(), suffix
    text = read_preset_file(out)
    fxp = read_preset_file(out.with_suffix(".fxp"))
    final = np.asarray(report["final"]["normalized"])
    np.testing.assert_array_equal(text.normalized, final)
    np.testing.assert_array_equal(fxp.internal, text.internal)
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    wav, sr = sf.read(out.with_suffix(".wav"), dtype="float32", always_2d=True)
    assert sr == sample_rate and wav.shape == (report["n_samples"], 2)
    duration = report["n_samples"] / sample_rate
    from training.config import from_dict

    data = from_dict(json.loads((Path(report["run"]) / "config.json").read_text())).data
    note = Note(report["note"], data.velocity, 0.0, report["hold_s"])
    assert duration == pytest.approx(report["duration_s"])
    for path in (out, out.with_suffix(".fxp")):  # the plugin reads the files themselves
        audio = render("amsynth", fxp=path, notes=[note], duration_s=duration, sample_rate=sample_rate)
        if not uses_noise(final[None])[0]:
            assert np.max(np.abs(audio.T - wav)) <= 1e-6, path
        else:
            assert np.isfinite(audio).all() and audio.shape == (2, report["n_samples"])
    if uses_noise(final[None])[0]:
        # noise comes from the plugin's process-global generator: sample for sample only in a
        # fresh render worker (the host's protocol), which is how match rendered it
        from proxies.host import RenderPool

        with RenderPool("amsynth", workers=1, sample_rate=sample_rate) as pool:
            audio, failures = pool.render_batch(text.normalized[None], notes=(note,), duration_s=duration)
        assert not failures
        assert np.max(np.abs(audio[0].T - wav)) <= 1e-6

    # the written preset is audible: never more than QUIET_DB below the target (silence would often
    # score a lower distance than a wrong sound)
    from training.match import QUIET_DB
    from training.search import rms_db

    assert report["final"]["level_db"] == pytest.approx(float(rms_db(wav.T[None])[0]), abs=0.05)
    assert report["final"]["level_db"] >= report["final"]["target_level_db"] - QUIET_DB

    stages = {s["name"]: s for s in report["stages"]}
    mss = [s["metrics"]["mss"] for s in report["stages"]]
    floor = report["final"]["target_level_db"] - QUIET_DB
    for prev, cur in zip(report["stages"], report["stages"][1:]):  # a stage never makes it worse, unless
        if prev["level_db"] >= floor:                              # it replaced an inaudible preset
            assert cur["metrics"]["mss"] <= prev["metrics"]["mss"] + 1e-9, f"a stage made it worse: {mss}"
        assert cur["level_db"] >= floor or not cur["improved"]
    assert report["stages"][0]["improved"]
    for key in ("mss", "logmel_l1", "mfcc_l1"):
        assert np.isfinite(report["final"]["metrics"][key])
    if not report["final"]["uses_noise"]:
        kept = stages[report["kept"]]["metrics"]["mss"]
        assert report["final"]["metrics"]["mss"] == pytest.approx(kept, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory) -> Path:
    """One cache of the factory corpus renders for the module (``training.match.cache_root``)."""
    return tmp_path_factory.mktemp("synthprog-cache")


@pytest.mark.plugin
def test_match_factory_preset(tiny_run, tmp_path, capsys, corpus_cache, monkeypatch):
    """Default quality: the factory corpus joins the model's candidates, so a factory preset's
    own sound is matched by that very preset (found, ranked by the proxy, confirmed by the plugin)."""
    monkeypatch.setenv("SYNTHPROG_CACHE", str(corpus_cache))
    target = tmp_path / "factory.wav"
    name, normalized = factory_target(target)
    out = tmp_path / "out" / "patch.amSynth"
    rc, stdout, stderr = _run_match([str(target), "--run", str(tiny_run), "--out", str(out), "--note", "auto",
                                     "--refine-steps", "3", "--snapshots", "2", "--search-renders", "12"], capsys)
    assert rc == 0, stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["note"] == 60 and report["note_source"] == "estimated" and report["quality"] == "default"
    assert report["sample_rate"] == 16000 and report["hold_source"] == "release"
    assert report["hold_s"] == pytest.approx(0.3, abs=0.051)  # the note-off, from the envelope
    assert [s["name"] for s in report["stages"]] == ["model", "best_of_k", "refine", "search"]
    ranked = report["stages"][1]
    assert ranked["candidates"] == 16 + 48 and len(ranked["proxy_distances"]) == 64
    assert any(name in src for src in ranked["sources"]), "the target's own preset is among the nearest human presets"
    assert report["stages"][2]["renders"] == 2 and report["stages"][3]["renders"] == 12
    assert name in ranked["picked"], ranked["picked"]  # the real synth confirms it
    # found it (not 0: the target's first samples under -60 dB re peak are dropped, a shift of a few ms)
    assert report["final"]["metrics"]["mss"] < 0.2 and report["final"]["metrics"]["logmel_l1"] < 0.5, \
        report["final"]["metrics"]
    assert report["stages"][0]["metrics"]["mss"] > 5 * report["final"]["metrics"]["mss"]  # the model alone did not
    for stage in ("model", "best_of_k", "refine", "search", "final"):  # distances printed per stage
        assert any(line.startswith(stage) and "." in line for line in stdout.splitlines()), stdout
    assert "estimated note 60" in stdout and "time:" in stdout
    _check_outputs(out, report, 16000)


@pytest.mark.plugin
def test_match_karplus_strong_pluck(tiny_run, tmp_path, capsys):
    """--quality fast: the model's candidates ranked by the proxy, one plugin render (the written
    preset's), the sound judged at its own 22.05 kHz."""
    target = tmp_path / "pluck.flac"
    karplus_strong(target)
    out = tmp_path / "pluck.amSynth"
    rc, stdout, stderr = _run_match([str(target), "--run", str(tiny_run), "--out", str(out), "--quality", "fast",
                                     "--name", "Pluck"], capsys)
    assert rc == 0, stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["target"]["sample_rate"] == 22050 and report["target"]["channels"] == 2
    assert report["sample_rate"] == 22050 and report["hold_source"] == "decays_from_attack"
    assert report["note"] == 60 and abs(report["f0_hz"] - 261.63) < 8
    assert [s["name"] for s in report["stages"]] == ["best_of_k"] and report["stages"][0]["renders"] == 1
    assert report["stages"][0]["judged_by"] == "proxy"
    from proxies.amsynth.presets import read_preset_file

    assert read_preset_file(out).name == "Pluck"
    _check_outputs(out, report, 22050)


@pytest.mark.plugin
def test_match_faust_synth(tiny_run, tmp_path, capsys):
    """A sound from another synth (Faust, through DawDreamer): 44.1 kHz mono 24-bit, judged whole
    at 44.1 kHz with the note length given; the written preset renders in amsynth what was reported."""
    target = tmp_path / "faust voice.wav"
    faust_synth(target)
    out = tmp_path / "faust" / "voice.amSynth"
    rc, stdout, stderr = _run_match([str(target), "--run", str(tiny_run), "--out", str(out), "--quality", "fast",
                                     "--hold", "0.45", "--search-renders", "4"], capsys)
    assert rc == 0, stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["target"]["sample_rate"] == 44100 and report["target"]["channels"] == 1
    assert report["target"]["format"] == "WAV/PCM_24"
    assert report["note"] == 60 and report["note_source"] == "estimated" and abs(report["f0_hz"] - 261.63) < 3
    assert report["sample_rate"] == 44100 and report["hold_s"] == pytest.approx(0.45) and report["hold_source"] == "given"
    assert report["duration_s"] >= 0.75  # the whole sound, not the model's 0.5 s window
    joined = " ".join(report["conditioning"])
    assert "mono target" in joined and "judging the whole sound" in joined
    assert [s["name"] for s in report["stages"]] == ["model", "best_of_k", "search"]
    assert "final" in stdout and str(out) in stdout
    _check_outputs(out, report, 44100)


@pytest.mark.plugin
def test_match_folder_gallery_and_resume(tiny_run, tmp_path, capsys):
    """A folder: one preset per sound (sub-folders kept), one gallery page; a rerun skips what is done."""
    src = tmp_path / "sounds"
    (src / "sub").mkdir(parents=True)
    karplus_strong(src / "pluck.flac")
    short_bell(src / "sub" / "bell.ogg")
    out = tmp_path / "matched"
    rc, stdout, stderr = _run_match([str(src), "--run", str(tiny_run), "--out", str(out), "--quality", "fast"], capsys)
    assert rc == 0, stderr
    for rel in ("pluck", "sub/bell"):
        report = json.loads((out / f"{rel}.json").read_text())
        assert (out / f"{rel}.amSynth").is_file() and (out / f"{rel}.wav").is_file()
        assert np.isfinite(report["final"]["metrics"]["mss"])
    page = (out / "index.html").read_text()
    assert "pluck" in page and "bell" in page and "2 matched" in stdout, stdout
    mtime = (out / "pluck.json").stat().st_mtime_ns
    rc, stdout, stderr = _run_match([str(src), "--run", str(tiny_run), "--out", str(out), "--quality", "fast"], capsys)
    assert rc == 0 and "2 already matched, 0 to match" in stdout, stdout
    assert (out / "pluck.json").stat().st_mtime_ns == mtime


def short_bell(path: Path, sample_rate: int = 32000) -> None:
    """A struck-bell-like sound: inharmonic partials (ratios of a bar) decaying within 0.15 s,
    then 0.05 s of silence, as a 32 kHz ogg (Vorbis)."""
    t = np.arange(int(0.15 * sample_rate)) / sample_rate
    partials = [(523.25, 1.0, 18.0), (1443.0, 0.6, 25.0), (2829.0, 0.35, 35.0), (4677.0, 0.2, 45.0)]
    x = sum(a * np.sin(2 * np.pi * f * t) * np.exp(-d * t) for f, a, d in partials)
    x = np.concatenate([0.4 * x / np.max(np.abs(x)), np.zeros(int(0.05 * sample_rate))])
    sf.write(path, np.stack([x, x], axis=1), sample_rate, format="OGG", subtype="VORBIS")


@pytest.mark.plugin
def test_match_short_bell_is_not_matched_by_silence(tiny_run, tmp_path, capsys):
    """On a short sound the distance prefers a silent preset to a wrong sound; match must still
    write a preset that plays at a level near the target's (checked in _check_outputs)."""
    target = tmp_path / "bell.ogg"
    short_bell(target)
    out = tmp_path / "bell.amSynth"
    rc, stdout, stderr = _run_match([str(target), "--run", str(tiny_run), "--out", str(out), "--note", "60",
                                     "--quality", "fast", "--search-renders", "6"], capsys)
    assert rc == 0, stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["note_source"] == "given" and report["target"]["format"].startswith("OGG")
    assert report["sample_rate"] == 32000 and report["duration_s"] == 0.5  # 0.15 s of sound, the shortest judge
    _check_outputs(out, report, 32000)


# ------------------------------------------------------------------------------ bad input
@pytest.fixture()
def fake_run(tmp_path) -> Path:
    """A run directory that passes the option checks (no trained weights: heavy work must not start)."""
    from training.config import load_config

    run = tmp_path / "fake-run"
    (run / "checkpoints" / "best" / "20").mkdir(parents=True)
    cfg = load_config(ROOT / "configs" / "amsynth.toml", [o for o in TINY_OVERRIDES])
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    return run


def _write(tmp_path: Path, kind: str) -> Path:
    sr = 16000
    t = np.arange(sr // 2) / sr
    tone = 0.3 * np.sin(2 * np.pi * 262 * t)
    if kind == "silent":
        p = tmp_path / "silent.wav"
        sf.write(p, np.zeros((sr, 2)), sr)
    elif kind == "nan":
        p = tmp_path / "nan.wav"
        x = np.stack([tone, tone], 1).astype(np.float32)
        x[100, 0] = np.nan
        sf.write(p, x, sr, subtype="FLOAT")
    elif kind == "corrupt":
        p = tmp_path / "corrupt.wav"
        p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(range(200)))
    elif kind == "empty":
        p = tmp_path / "empty.flac"
        p.write_bytes(b"")
    elif kind == "text":
        p = tmp_path / "notes.ogg"
        p.write_text("this is not audio\n")
    else:
        p = tmp_path / "tone.wav"
        sf.write(p, tone, sr)
    return p


@pytest.mark.parametrize("kind, extra, pattern", [
    ("silent", [], r"target: expected a sound .*got silence \(peak -inf dBFS\).*fix: "),
    ("nan", [], r"target: expected finite samples, got 1 NaN/inf sample\(s\).*fix: "),
    ("corrupt", [], r"target: expected an audio file libsndfile can decode.*corrupt\.wav.*fix: convert it"),
    ("empty", [], r"target: expected an audio file libsndfile can decode.*empty\.flac.*fix: "),
    ("text", [], r"target: expected an audio file libsndfile can decode.*notes\.ogg"),
    ("missing", [], r"TARGET: expected an audio file or a folder of them, got '.*nope\.wav', which does not exist; fix: check "
                    r"the path"),
    ("tone", ["--note", "200"], r"--note: expected an integer in 0\.\.127, got '200'; fix: give a MIDI note"),
    ("tone", ["--note", "C4"], r"--note: expected an integer in 0\.\.127, got 'C4'"),
    ("tone", ["--note", "127", "--quality", "fast"], r"note: expected within 36 semitones of the notes the model was "
                                                    r"trained on \(36\.\.84\), got 127"),
    ("tone", ["--hold", "-1"], r"--hold: expected a number in \(0, 600\], got '-1'"),
    ("tone", ["--hold", "9"], r"--hold: expected seconds in \(0, 0\.75\) \(the judged length of this sound\)"),
    ("tone", ["--synth", "amsynth"], r"--run/--synth: expected one of them"),
    ("tone", ["--refine-steps", "-1"], r"--refine-steps: expected an integer >= 0, got '-1'; fix: 0 skips"),
    ("tone", ["--search-renders", "lots"], r"--search-renders: expected an integer >= 0, got 'lots'"),
    ("tone", ["--refine-lr", "0"], r"--refine-lr: expected a learning rate in \(0, 10\], got '0'"),
    ("tone", ["--out-wrong"], r"--out: expected a file name ending in \.amSynth.*got '.*patch\.wav'; fix: e\.g\. --out"),
    ("tone", ["--run-missing"], r"--run: expected a run directory written by training\.fit.*does not exist; fix: train"),
    ("tone", ["--run-empty"], r"--run: expected a checkpoint in .*best, got none; fix: train longer"),
])
def test_bad_input_fails_clearly_before_heavy_work(kind, extra, pattern, tmp_path, fake_run, capsys, monkeypatch):
    import training.evaluate_core
    import training.search

    def heavy(*a, **k):
        raise AssertionError("heavy work started before the input was checked")

    monkeypatch.setattr(training.evaluate_core, "load_predictor", heavy)
    monkeypatch.setattr(training.search, "NoteRenderer", heavy)
    target = tmp_path / "nope.wav" if kind == "missing" else _write(tmp_path, kind)
    out = tmp_path / "patch.amSynth"
    run = fake_run
    if "--out-wrong" in extra:
        out, extra = tmp_path / "patch.wav", []
    if "--run-missing" in extra:
        run, extra = tmp_path / "no-such-run", []
    if "--run-empty" in extra:
        (fake_run / "checkpoints" / "best" / "20").rmdir()
        extra = []
    rc, stdout, stderr = _run_match([str(target), "--run", str(run), "--out", str(out), *extra], capsys)
    assert rc == 2
    import re

    assert re.search(pattern, stderr), stderr
    assert stderr.startswith("error: ") and "expected" in stderr and "fix:" in stderr
    assert not out.exists() and not out.with_suffix(".wav").exists()


def test_a_run_whose_synth_cannot_load_names_its_config(tmp_path, fake_run, capsys, monkeypatch):
    """--run with a synth this install cannot load (the run checks passed: e.g. a plugin removed
    since): the message names the run's data.synth and the fix, not --synth."""
    import training.match

    cfg = json.loads((fake_run / "config.json").read_text())
    cfg["data"]["synth"] = "nosuchsynth"
    (fake_run / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(training.match, "check_run_dir", lambda run, which="best", flag="--run": Path(run))
    monkeypatch.setattr(training.match, "read_run_config",
                        lambda p, flag="--run": json.loads((p / "config.json").read_text()))
    out = tmp_path / "patch.amSynth"
    rc, stdout, stderr = _run_match([str(_write(tmp_path, "tone")), "--run", str(fake_run), "--out", str(out)], capsys)
    assert rc == 2
    import re

    assert re.search(r"--run: expected a run trained on a synth this install can load, got data\.synth = "
                     r"'nosuchsynth' in .*config\.json \(unknown synth 'nosuchsynth'.*\); fix: install that synth",
                     stderr), stderr
    assert "--synth" not in stderr and "None" not in stderr
    assert not out.exists()


def test_cli_reports_errors_without_a_traceback(tmp_path, fake_run):
    target = _write(tmp_path, "nan")
    r = subprocess.run([sys.executable, "-m", "training.match", str(target), "--run", str(fake_run), "--out",
                        str(tmp_path / "p.amSynth")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "expected finite samples" in r.stderr


# ------------------------------------------------------------------------------ pieces
def test_condition_audio_and_note_estimate():
    from training.targets import condition_audio, estimate_note

    sr = 22050
    t = np.arange(int(0.3 * sr)) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    lead = np.zeros(int(0.1 * sr))
    said: list[str] = []
    mono = np.concatenate([lead, tone])[None]
    out = condition_audio(mono, sr, 16000, 8000, said.append)
    assert out.shape == (2, 8000) and out.dtype == np.float32
    assert np.array_equal(out[0], out[1])
    assert any("mono" in m for m in said) and any("resampled from 22050" in m for m in said)
    assert any("leading silence" in m for m in said) and any("padded" in m for m in said)
    assert any("dropped 100 ms of leading silence" in m for m in said), said
    assert np.max(np.abs(out[0, :16])) > 0.1  # the tone starts at once
    note, f0, voiced = estimate_note(out, 16000)
    assert note == 69 and abs(f0 - 440) < 3 and voiced > 0.5
    noise = np.random.default_rng(0).normal(0, 0.3, (2, 8000))
    assert estimate_note(noise, 16000)[0] is None


def test_quiet_renders_score_inf():
    """``min_level_db`` turns renders quieter than the floor (silence included) into ``inf``, and
    leaves the distance of the others as it is."""
    from training.search import rms_db, score_mss

    sr = 16000
    t = np.arange(4000) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    target = np.stack([np.stack([tone, tone])] * 3)
    audio = target.copy()
    audio[1] *= 0.01  # -40 dB
    audio[2] = 0.0
    assert rms_db(audio[:1])[0] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert rms_db(audio[2:])[0] == -np.inf
    ok = np.ones(3, bool)
    plain = score_mss(audio, target, ok, sr)
    assert plain[0] == pytest.approx(0.0, abs=1e-6) and np.isfinite(plain).all()
    floor = rms_db(target[:1])[0] - 20.0
    guarded = score_mss(audio, target, ok, sr, floor)
    assert guarded[0] == plain[0] and guarded[1] == np.inf and guarded[2] == np.inf
    per_row = score_mss(audio, target, ok, sr, np.array([0.0, -200.0, -200.0]))
    assert per_row[0] == np.inf and per_row[1] == plain[1] and per_row[2] == np.inf


def test_note_renderer_recovers_from_poisoned_workers():
    """A preset that makes NaN may leave a worker returning NaN for every later render: the bad
    rows are rendered again in fresh pools, and only the culprit stays failed."""
    from training.config import load_config
    from training.search import NoteRenderer

    data = load_config(None, ["data.duration_s=0.2", "data.hold_s=0.1", "loss.fft_sizes=[256]", "features.n_fft=256",
                              "features.hop=64"]).data

    class Poisonable(NoteRenderer):
        starts = 0

        def __enter__(self):
            self.poisoned = False
            Poisonable.starts += 1
            return self

        def __exit__(self, *exc):
            pass

        def render(self, normalized, pitch=None):
            audio = np.zeros((len(normalized), 2, data.n_samples), np.float32)
            ok = np.ones(len(normalized), bool)
            for i, row in enumerate(normalized):
                if row[0] == 0.5:  # the culprit
                    self.poisoned = True
                if self.poisoned:
                    ok[i] = False
                else:
                    audio[i] = row[0] + pitch[i]
            return audio, ok

    r = Poisonable(data)
    with r:
        presets = np.zeros((5, 41))
        presets[:, 0] = [0.1, 0.5, 0.2, 0.3, 0.4]
        audio, ok = r.render_at(presets, [60, 60, 60, 61, 60])
    assert ok.tolist() == [True, False, True, True, True]
    assert audio[:, 0, 0].tolist() == pytest.approx([60.1, 0.0, 60.2, 61.3, 60.4])
    assert r.restarts == 3 and r.cfg == data  # batch retry, one-by-one retry, after the culprit
