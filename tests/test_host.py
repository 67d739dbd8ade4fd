"""The real-plugin host: determinism protocol, sync, the worker pool (crash / hang / retry),
input validation, and the render CLI against an independent DawDreamer render."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from proxies import host as H
from proxies import render as cli
from proxies.amsynth import presets as P
from proxies.amsynth.spec import AMSYNTH, uses_noise, uses_sync

I = AMSYNTH.index_of
SR = 44100
DUR = 1.0
NOTES = (H.Note(60, 100, 0.0, 0.6),)
FACTORY_BANK = Path(P.FACTORY_BANKS_DIR) / "BriansBank01.amSynth.bank"
FACTORY_INDEX = 19  # "StrangeWhistle": triangle LFO, reverb 0.34, crunch 0.33, no noise, no sync
REPO = Path(__file__).resolve().parents[1]

plugin = pytest.mark.plugin


def _with(n: np.ndarray, **values: float) -> np.ndarray:
    n = n.copy()
    for k, v in values.items():
        n[I(k)] = v
    return n


def _presets() -> dict[str, np.ndarray]:
    """Named test presets: random ones (seeded) plus edited ones for the hard cases."""
    rng = np.random.default_rng(1234)
    pool = AMSYNTH.sample_normalized(rng, 200)
    plain = [x for x in pool if not uses_noise(x) and not uses_sync(x)]
    noisy = [x for x in pool if uses_noise(x) and not uses_sync(x)]
    out = {
        "A": plain[0],
        "B": _with(plain[1], master_vol=0.95, lfo_freq=0.3, distortion_crunch=0.0, reverb_wet=0.0),
        "C": plain[2],
        # triangle LFO on pitch, cutoff and amp, with reverb (long tail, high damping) and crunch
        "TRI": _with(plain[3], lfo_waveform=2 / 6, lfo_freq=0.6, freq_mod_amount=0.9, filter_mod_amount=0.7,
                     amp_mod_amount=0.6, reverb_wet=0.8, reverb_roomsize=0.9, reverb_damp=0.6,
                     distortion_crunch=0.3, master_vol=0.5),
        # osc2 hard-synced to a saw osc1 (sync active), no noise
        "SYNC": _with(plain[4], osc1_waveform=0.5, osc2_waveform=0.5, osc2_sync=1.0, osc2_range=4 / 7,
                      osc2_pitch=19 / 24, amp_attack=0.0, amp_sustain=1.0),
        "SYNC2": _with(plain[5], osc1_waveform=0.0, osc2_waveform=0.25, osc2_sync=1.0),
        "NOISE": _with(noisy[0], osc1_waveform=0.75),
    }
    for k in ("A", "B", "C", "TRI", "SYNC", "SYNC2"):
        assert not uses_noise(out[k]), k
    assert uses_sync(out["SYNC"]) and uses_sync(out["SYNC2"]) and not uses_sync(out["TRI"])
    return out


PRESETS = _presets()


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _snr_db(ref: np.ndarray, x: np.ndarray) -> float:
    err = np.sum((ref.astype(np.float64) - x.astype(np.float64)) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / err))


# ------------------------------------------------------------------------- no plugin needed
def test_note_validation():
    assert H.Note() == H.Note(60, 100, 0.0, 1.0)
    for bad in (dict(pitch=128), dict(pitch=-1), dict(pitch=60.5), dict(velocity=0), dict(velocity=128),
                dict(start_s=-0.1), dict(hold_s=0.0), dict(hold_s=float("nan")), dict(hold_s="1")):
        with pytest.raises(ValueError, match="Note"):
            H.Note(**bad)


def test_sample_rate_checked_before_anything_is_loaded():
    missing = H.get_plugin("amsynth").at("/nonexistent/amsynth_vst.so")
    for sr in (100, 44100.5, "44100", 10**6, True, None):
        with pytest.raises(ValueError, match="unsupported sample rate"):
            H.render(missing, PRESETS["A"], sample_rate=sr)
    assert H.check_sample_rate(16000.0) == 16000


def test_missing_plugin_names_path_and_install_command():
    missing = H.get_plugin("amsynth").at("/nonexistent/amsynth_vst.so")
    with pytest.raises(H.PluginNotFoundError, match=r"/nonexistent/amsynth_vst\.so.*apt-get install amsynth"):
        H.render(missing, PRESETS["A"])
    with pytest.raises(H.PluginNotFoundError, match="/nonexistent/other.so"):
        H.PluginHost("/nonexistent/other.so")
    with pytest.raises(ValueError, match="unknown plugin 'dx7'.*amsynth"):
        H.get_plugin("dx7")


def test_bad_values_are_rejected_before_the_plugin_is_touched():
    missing = H.get_plugin("amsynth").at("/nonexistent/amsynth_vst.so")  # proves no load happens
    a = PRESETS["A"]
    cases = [
        (dict(normalized=_with(a, filter_cutoff=np.nan)), "filter_cutoff.*not finite"),
        (dict(normalized=_with(a, osc_mix=1.5)), "osc_mix.*outside"),
        (dict(normalized=_with(a, osc_mix=-0.01)), "osc_mix.*outside"),
        (dict(normalized=a[:40]), "41"),
        (dict(normalized=np.stack([a, a])), "shape"),
        (dict(), "exactly one of"),
        (dict(normalized=a, internal=AMSYNTH.defaults_internal), "exactly one of"),
        (dict(internal=_with(AMSYNTH.defaults_internal, filter_cutoff=2.0)), "filter_cutoff.*range"),
        (dict(normalized=a, duration_s=0.0), "duration_s"),
        (dict(normalized=a, notes=(H.Note(60, 100, 2.0, 1.0),), duration_s=1.0), "starts at 2.0"),
        (dict(normalized=a, notes=()), "notes is empty"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            H.render(missing, **kwargs)
    with pytest.raises(ValueError, match="workers"):
        H.RenderPool("amsynth", workers=0)
    with pytest.raises(ValueError, match="fork"):
        H.RenderPool("amsynth", start_method="fork")
    with pytest.raises(ValueError, match="fork must be"):
        H.RenderPool("amsynth", fork="always")


def test_is_reproducible_flags_noise():
    rows = np.stack([PRESETS["A"], PRESETS["NOISE"], PRESETS["SYNC"]])
    assert H.is_reproducible("amsynth", rows).tolist() == [True, False, True]


# --------------------------------------------------------------------------- the protocol
@plugin
def test_render_length_dtype_and_channels():
    for sr, dur in ((SR, 0.5), (SR, 889 / SR), (16000, 0.75)):
        audio = H.render("amsynth", PRESETS["A"], notes=(H.Note(60, 100, 0.0, 0.2),), duration_s=dur, sample_rate=sr)
        assert audio.dtype == np.float32 and audio.shape == (2, round(dur * sr)) and np.isfinite(audio).all()


@plugin
def test_determinism_history_and_fresh_process():
    """A, B, TRI, C, A, TRI on one instance == A, TRI in a fresh worker process, bit for bit."""
    host = H.PluginHost("amsynth", SR)
    first = {k: host.render(PRESETS[k], NOTES, DUR) for k in ("A", "B", "TRI", "C")}
    again = {k: host.render(PRESETS[k], NOTES, DUR) for k in ("A", "TRI")}
    with H.RenderPool("amsynth", workers=1, sample_rate=SR, fork=False) as pool:  # no forks: one instance
        fresh, failures = pool.render_batch(np.stack([PRESETS["A"], PRESETS["TRI"]]), NOTES, DUR)
        assert not pool.forking
        assert pool.reproducible(np.stack([PRESETS["A"], PRESETS["NOISE"]])).tolist() == [True, False]
    assert failures == []
    diffs = {
        "A again": _maxdiff(first["A"], again["A"]),
        "TRI again": _maxdiff(first["TRI"], again["TRI"]),
        "A fresh process": _maxdiff(first["A"], fresh[0]),
        "TRI fresh process": _maxdiff(first["TRI"], fresh[1]),
    }
    print("\ndeterminism max |diff|:", diffs)
    assert max(diffs.values()) <= 1e-6
    assert np.abs(first["TRI"]).max() > 0.01 and np.abs(first["TRI"][0] - first["TRI"][1]).max() > 1e-3  # reverb on


@plugin
def test_plain_readme_protocol_is_history_dependent():
    """Negative control: without the pre-roll/flush steps, TRI rendered after B differs."""
    fresh = H.PluginHost("amsynth", SR, canonicalize=False).render(PRESETS["TRI"], NOTES, DUR)
    used = H.PluginHost("amsynth", SR, canonicalize=False)
    used.render(PRESETS["B"], NOTES, DUR)
    after_b = used.render(PRESETS["TRI"], NOTES, DUR)
    d = _maxdiff(fresh, after_b)
    print(f"\nREADME-10 protocol, TRI fresh vs after B: max |diff| {d:.3g}")
    assert d > 1e-5


@plugin
def test_sync_presets_get_a_fresh_instance():
    host = H.PluginHost("amsynth", SR)
    s1 = host.render(PRESETS["SYNC"], NOTES, DUR)
    host.render(PRESETS["SYNC2"], NOTES, DUR)
    s2 = host.render(PRESETS["SYNC"], NOTES, DUR)
    assert host.instances_made == 3  # the first, then one per sync render on a used voice
    host.render(PRESETS["SYNC"], (H.Note(64, 100, 0.0, 0.6),), DUR)  # voice 64 is unused: no new one
    assert host.instances_made == 3
    without = H.PluginHost("amsynth", SR, fresh_sync_instances=False)
    w1 = without.render(PRESETS["SYNC"], NOTES, DUR)
    without.render(PRESETS["SYNC2"], NOTES, DUR)
    w2 = without.render(PRESETS["SYNC"], NOTES, DUR)
    d_with, d_without, d_first = _maxdiff(s1, s2), _maxdiff(w1, w2), _maxdiff(s1, w1)
    print(f"\nsync: with fresh instances {d_with:.3g}, without {d_without:.3g}")
    assert d_with == 0.0 and d_first == 0.0
    assert d_without > 1e-3  # the accumulator ran on


@plugin
def test_internal_and_fxp_inputs_render_like_normalized(tmp_path):
    preset = P.Preset.from_normalized("tri", PRESETS["TRI"])
    ref = H.render("amsynth", preset.normalized, notes=NOTES, duration_s=DUR)
    assert _maxdiff(ref, H.render("amsynth", internal=preset.internal, notes=NOTES, duration_s=DUR)) == 0.0
    P.write_fxp_params(tmp_path / "tri.fxp", preset)
    assert _maxdiff(ref, H.render("amsynth", fxp=tmp_path / "tri.fxp", notes=NOTES, duration_s=DUR)) == 0.0
    batch = H.render_batch("amsynth", np.stack([PRESETS["A"], preset.normalized]), notes=NOTES, duration_s=DUR)
    assert batch.shape == (2, 2, round(DUR * SR)) and _maxdiff(batch[1], ref) == 0.0


@plugin
def test_plugin_paths_registered_and_bare(tmp_path):
    amsynth = H.get_plugin("amsynth")
    assert H.get_plugin(amsynth.default_path) is amsynth  # its path gets its spec and recipe
    bare_path = tmp_path / "some_synth_vst.so"
    bare_path.write_bytes(Path(amsynth.default_path).read_bytes())
    bare = H.get_plugin(str(bare_path))
    assert bare.spec is None and bare.preroll_overrides is None and bare.name == "some_synth_vst"
    audio = H.render(bare, PRESETS["A"], notes=NOTES, duration_s=0.5)  # values by index, README-10 protocol
    assert audio.shape == (2, round(0.5 * SR)) and np.abs(audio).max() > 1e-3
    with pytest.raises(ValueError, match="expected 41 normalized values"):
        H.render(bare, PRESETS["A"][:40], notes=NOTES, duration_s=0.5)
    with pytest.raises(ValueError, match="internal= needs a parameter spec"):
        H.render(bare, internal=AMSYNTH.defaults_internal)


@plugin
def test_corrupt_plugin_file_gives_a_clear_error(tmp_path):
    bad = tmp_path / "broken_vst.so"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(RuntimeError, match=r"could not load .*broken_vst\.so"):
        H.PluginHost(str(bad))
    with pytest.raises(RuntimeError, match=r"could not start .*broken_vst\.so"):
        H.RenderPool(str(bad), workers=1)
    assert not [p for p in mp.active_children() if p.name.startswith("render-")]


# -------------------------------------------------------------------------------- the pool
@pytest.fixture(scope="module")
def refs():
    """In-process renders of every test preset (the reference for the pool)."""
    return {k: H.render("amsynth", v, notes=NOTES, duration_s=DUR) for k, v in PRESETS.items()}


@plugin
def test_pool_matches_in_process_and_reuses_workers(refs, tmp_path):
    keys = ["A", "TRI", "SYNC", "NOISE", "B", "C", "SYNC2"]
    rows = np.stack([PRESETS[k] for k in keys])
    with H.RenderPool("amsynth", workers=2, sample_rate=SR) as pool:
        pids = pool.pids
        audio, failures = pool.render_batch(rows, NOTES, DUR)
        again, failures2 = pool.render_batch(rows[::-1], NOTES, DUR, progress=True)
        assert pool.pids == pids and len(pids) == 2  # same workers, engines reused
        assert pool.forking and pool.reproducible(rows).all()
        procs = [w.proc for w in pool._workers]
    assert failures == [] and failures2 == []
    assert audio.shape == (len(keys), 2, round(DUR * SR)) and audio.dtype == np.float32
    repro = H.is_reproducible("amsynth", rows)  # in-process: noise is not
    worst = max(_maxdiff(audio[i], refs[k]) for i, k in enumerate(keys) if repro[i])
    print(f"\npool (2 workers) vs in-process, reproducible rows: max |diff| {worst:.3g}")
    assert worst <= 1e-6
    assert _maxdiff(audio, again[::-1]) == 0.0  # every row, noise included, in either worker
    assert not repro[keys.index("NOISE")]
    assert all(not p.is_alive() and p.exitcode is not None for p in procs)  # closed, reaped
    # a noise preset from the pool equals the first render of a fresh process (RNG at its seed)
    np.save(tmp_path / "noise.npy", PRESETS["NOISE"])
    code = (
        "import numpy as np; from proxies import host as H;"
        f"a = H.render('amsynth', np.load({str(tmp_path / 'noise.npy')!r}), notes=(H.Note(60, 100, 0.0, 0.6),),"
        f" duration_s={DUR}); np.save({str(tmp_path / 'fresh.npy')!r}, a)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, timeout=120)
    d = _maxdiff(np.load(tmp_path / "fresh.npy"), audio[keys.index("NOISE")])
    # in this process the noise generator runs on: the same preset renders differently again
    d_here = _maxdiff(H.render("amsynth", PRESETS["NOISE"], notes=NOTES, duration_s=DUR), refs["NOISE"])
    print(f"noise preset: pool vs fresh process max |diff| {d:.3g}; two renders in one process {d_here:.3g}")
    assert d == 0.0 and d_here > 1e-3


@plugin
def test_pool_crash_and_hang_are_retried_then_reported(refs):
    keys = ["A", "TRI", "B", "C", "A", "SYNC", "NOISE"]
    rows = np.stack([PRESETS[k] for k in keys])
    with H.RenderPool("amsynth", workers=2, sample_rate=SR, timeout_s=2.0) as pool:
        pool._faults = {
            1: ("abort", 1),  # the worker crashes once: the retry in a fresh worker succeeds
            2: ("segv", 2),  # the worker crashes twice: reported
            3: ("hang", 1),  # the worker hangs once: killed after the timeout, retried
            4: ("raise", 2),  # a Python error twice: reported
            5: ("child-segv", 1),  # a forked render process crashes once: retried
            6: ("child-hang", 2),  # a forked render process hangs twice: reported
        }
        audio, failures = pool.render_batch(rows, NOTES, DUR)
        pool._faults = {0: ("hang", 2)}
        audio2, failures2 = pool.render_batch(rows[:2], NOTES, DUR)
        assert len(pool.pids) == 2  # replacements keep the pool full
        started = pool.workers_started
        procs = [w.proc for w in pool._workers]
    print("\nfailures:", *(failures + failures2), f"workers started: {started}", sep="\n  ")
    assert [f.index for f in failures] == [2, 4, 6]
    seg, err, child_hang = failures
    assert seg.attempts == 2 and "SIGSEGV" in seg.reason and "worker crashed" in seg.reason
    assert err.attempts == 2 and "injected failure" in err.reason
    assert child_hang.attempts == 2 and "render process killed" in child_hang.reason
    assert np.isnan(audio[[2, 4, 6]]).all()
    for i in (0, 1, 3, 5):
        assert _maxdiff(audio[i], refs[keys[i]]) == 0.0, i
    assert [f.index for f in failures2] == [0] and "timed out" in failures2[0].reason
    assert failures2[0].reasons[0].startswith("timed out") and np.isnan(audio2[0]).all()
    assert _maxdiff(audio2[1], refs["TRI"]) == 0.0
    assert all(not p.is_alive() and p.exitcode is not None for p in procs)
    assert not [p for p in mp.active_children() if p.name.startswith("render-")]  # no zombies


# --------------------------------------------------------------------------------- the CLI
def _independent_render(normalized: np.ndarray, note: int, velocity: int, hold: float, dur: float) -> np.ndarray:
    """README §10 protocol written out with DawDreamer directly (fresh engine and instance)."""
    import dawdreamer as daw

    eng = daw.RenderEngine(SR, 512)
    syn = eng.make_plugin_processor("independent", H.get_plugin("amsynth").default_path)
    eng.load_graph([(syn, [])])
    syn.set_parameter(16, 5 / 6)  # LFO polarity +1
    for i, v in enumerate(normalized):
        syn.set_parameter(i, float(v))
    syn.clear_midi()
    syn.add_midi_note(note, velocity, 0.0, hold)
    eng.render(dur)
    eng.load_graph([(syn, [])])
    eng.render(dur)
    return np.asarray(eng.get_audio(), dtype=np.float32)


@plugin
def test_cli_factory_preset_matches_an_independent_render(tmp_path):
    out = tmp_path / "strange whistle.wav"
    cmd = [sys.executable, "-m", "proxies.render", "amsynth", "--preset", str(FACTORY_BANK),
           "--index", str(FACTORY_INDEX), "--note", "62", "--velocity", "90", "--hold", "0.8",
           "--duration", "1.2", "--out", str(out)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "StrangeWhistle" in res.stdout and "peak" in res.stdout and "dB" in res.stdout
    audio, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == SR and sf.info(out).subtype == "FLOAT" and audio.shape == (round(1.2 * SR), 2)
    preset = P.read_bank(FACTORY_BANK)[FACTORY_INDEX]
    ref = _independent_render(preset.normalized, 62, 90, 0.8, 1.2)
    ref = ref[:, : audio.shape[0]]
    snr = _snr_db(ref, audio.T)
    print(f"\nCLI vs independent README-10 DawDreamer render ({preset.name}): SNR {snr:.1f} dB, "
          f"max |diff| {_maxdiff(ref, audio.T):.3g}")
    assert snr >= 80.0
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left nothing behind


@plugin
def test_cli_random_bank_index_and_fxp(tmp_path, capsys):
    seed = next(s for s in range(100)
                if H.is_reproducible("amsynth", AMSYNTH.sample_normalized(np.random.default_rng(s), 1)[0]))
    assert cli.main(["amsynth", "--random", str(seed), "--out", str(tmp_path / "r.wav"), "--duration", "0.5",
                     "--hold", "0.3", "--sr", "16000"]) == 0
    assert f"random seed {seed}" in capsys.readouterr().out
    r, sr = sf.read(tmp_path / "r.wav", dtype="float32", always_2d=True)
    want = H.render("amsynth", AMSYNTH.sample_normalized(np.random.default_rng(seed), 1)[0],
                    notes=(H.Note(60, 100, 0.0, 0.3),), duration_s=0.5, sample_rate=16000)
    assert sr == 16000 and _maxdiff(r.T, want) == 0.0

    preset = P.read_bank(FACTORY_BANK)[FACTORY_INDEX]
    P.write_fxp_params(tmp_path / "p.fxp", preset)
    common = ["--duration", "0.6", "--hold", "0.4"]
    assert cli.main(["amsynth", "--preset", str(FACTORY_BANK), "--index", str(FACTORY_INDEX),
                     "--out", str(tmp_path / "bank.wav"), *common]) == 0
    assert cli.main(["amsynth", "--preset", str(tmp_path / "p.fxp"), "--out", str(tmp_path / "fxp.wav"), *common]) == 0
    b, _ = sf.read(tmp_path / "bank.wav", dtype="float32")
    f, _ = sf.read(tmp_path / "fxp.wav", dtype="float32")
    assert np.array_equal(b, f) and np.abs(b).max() > 0.01


def test_cli_rejects_bad_options(tmp_path, capsys):
    out = str(tmp_path / "o.wav")
    bank = str(FACTORY_BANK)
    cases = [
        (["amsynth", "--random", "1", "--index", "2", "--out", out], "--index K only applies"),
        (["amsynth", "--random", "1", "--preset", bank, "--out", out], "not allowed with"),
        (["amsynth", "--out", out], "one of the arguments --preset --random is required"),
        (["amsynth", "--random", "1", "--note", "128", "--out", out], "--note"),
        (["amsynth", "--random", "1", "--velocity", "0", "--out", out], "--velocity"),
        (["amsynth", "--random", "1", "--hold", "0", "--out", out], "--hold"),
        (["amsynth", "--random", "1", "--sr", "4000", "--out", out], "unsupported sample rate"),
        (["amsynth", "--random", "1", "--duration", "-1", "--out", out], "--duration"),
        (["amsynth", "--random", "1", "--out", str(tmp_path / "o.mp3")], ".wav"),
        (["amsynth", "--random", "1", "--out", str(tmp_path / "no" / "o.wav")], "does not exist"),
        (["amsynth", "--random", "1", "--engine", "proxyx", "--out", out], "invalid choice"),
        (["amsynth", "--preset", str(tmp_path / "missing.bank"), "--out", out], "no such file"),
        (["amsynth", "--preset", bank, "--out", out], "pick one with --index"),
        (["amsynth", "--preset", bank, "--index", "500", "--out", out], "out of range"),
    ]
    for argv, match in cases:
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert match in capsys.readouterr().err, argv
    assert not os.path.exists(out)
