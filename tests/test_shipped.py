"""Shipped models (``training/shipped/<synth>/``): export from a run, load by name with the
weights checked, refuse damaged files with the fix named; and the shipped amsynth and Dexed
models match a sound with no trained run, from another working directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from tests.test_match import ensure_tiny_run, factory_target

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return ensure_tiny_run(tmp_path_factory.getbasetemp() / "tiny")


@pytest.mark.plugin
def test_export_then_load_gives_the_same_predictions(tiny_run, tmp_path):
    from training import shipped
    from training.evaluate_core import load_predictor

    folder = shipped.export(tiny_run, tmp_path, made_by="test")
    assert folder == tmp_path / "amsynth" and shipped.available(tmp_path) == ["amsynth"]
    manifest = shipped.read_manifest("amsynth", tmp_path)
    assert manifest["made_by"] == "test" and manifest["eval"]["random"]["model"]["mss"] > 0
    got = shipped.load("amsynth", tmp_path)
    ref = load_predictor(tiny_run, "best")
    for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(got.params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    audio = np.random.default_rng(0).normal(0, 0.1, (3, 2, ref.cfg.data.n_samples)).astype(np.float32)
    np.testing.assert_array_equal(ref.predict_normalized(audio, 48), got.predict_normalized(audio, 48))
    # only the parameters travel: the folder is small
    assert sum(f.stat().st_size for f in folder.iterdir()) < 2e6


@pytest.mark.plugin
def test_damaged_or_missing_shipped_models_are_refused(tiny_run, tmp_path, monkeypatch, capsys):
    from training import shipped

    folder = shipped.export(tiny_run, tmp_path)
    with pytest.raises(shipped.ShippedModelError, match=r"no shipped model for 'dexed'.*Fix: pass --run"):
        shipped.load("dexed", tmp_path)
    z = dict(np.load(folder / shipped.WEIGHTS))
    key = next(k for k in z if k.startswith("params/"))
    z[key] = z[key] + 1e-3  # an edited weight
    np.savez(folder / shipped.WEIGHTS, **z)
    with pytest.raises(shipped.ShippedModelError, match=r"does not match its manifest's sha256.*Fix: restore"):
        shipped.load("amsynth", tmp_path)
    (folder / shipped.WEIGHTS).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(shipped.ShippedModelError, match=r"cannot be read.*Fix: restore"):
        shipped.load("amsynth", tmp_path)
    # through the command line: one error line with the fix, exit status 2, nothing written
    from tests.test_match import factory_target
    from training import match

    factory_target(tmp_path / "t.wav")
    out = tmp_path / "out" / "p.amSynth"
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    assert match.main([str(tmp_path / "t.wav"), "--synth", "amsynth", "--out", str(out), "--quality", "fast"]) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and "Fix: restore" in err and "Traceback" not in err and not out.exists()
    (folder / shipped.MANIFEST).write_text("{not json")
    with pytest.raises(shipped.ShippedModelError, match=r"manifest.json is damaged"):
        shipped.read_manifest("amsynth", tmp_path)


@pytest.mark.plugin
@pytest.mark.skipif(not (ROOT / "training" / "shipped" / "amsynth" / "manifest.json").is_file(),
                    reason="no shipped amsynth model in this checkout")
def test_shipped_amsynth_matches_a_sound_from_any_directory(tmp_path):
    """The quick start's second act: no --run, no flags beyond --synth and --out, another cwd."""
    from training import shipped

    m = shipped.read_manifest("amsynth")
    assert m["eval"]["random"]["model+proxy_search"]["mss"] < m["eval"]["random"]["nearest_neighbour"]["mss"]
    target = tmp_path / "sound.wav"
    factory_target(target)
    out = tmp_path / "out" / "patch.amSynth"
    match_from_elsewhere(tmp_path, "amsynth", target, out)
    assert out.is_file() and out.with_suffix(".fxp").is_file()


def match_from_elsewhere(tmp_path: Path, synth: str, target: Path, out: Path) -> dict:
    """``training.match TARGET --synth SYNTH --out OUT --quality fast`` run from another working
    directory; returns its report after checking it names the shipped model and a finite distance."""
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-m", "training.match", str(target), "--synth", synth, "--out", str(out),
                        "--quality", "fast"], cwd=elsewhere, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["model"] == f"shipped:{synth}" and np.isfinite(report["final"]["metrics"]["mss"])
    return report


def dexed_target(path: Path, sample_rate: int = 16000, duration_s: float = 1.0) -> str:
    """One of hexter's human DX7 voices rendered by dexed-py at note 60, as a float wav."""
    import soundfile as sf

    from proxies.dexed.engine import open_engine
    from proxies.dexed.presets import hexter_corpus
    from proxies.notes import Note

    names, normalized = hexter_corpus("all")
    i = 37
    engine = open_engine(sample_rate, workers=1)
    try:
        audio, failures = engine.render(normalized[i:i + 1], (Note(60, 100, 0.0, 0.5),), duration_s)
    finally:
        engine.close()
    assert not failures
    sf.write(path, audio[0].T, sample_rate, subtype="FLOAT")
    return names[i]


@pytest.mark.skipif(not (ROOT / "training" / "shipped" / "dexed" / "manifest.json").is_file(),
                    reason="no shipped Dexed model in this checkout")
def test_shipped_dexed_matches_a_voice_from_any_directory(tmp_path):
    """The same for Dexed: a human DX7 voice, matched by the shipped model into a loadable sysex."""
    from proxies.dexed.presets import read_preset
    from proxies.dexed.spec import DEXED
    from training import shipped

    m = shipped.read_manifest("dexed")
    for set_name in ("random", "factory"):  # the shipped figures the README quotes
        rows = m["eval"][set_name]
        assert rows["model+proxy_search"]["mss"] < rows["nearest_neighbour"]["mss"] < rows["mean_preset"]["mss"]
    target = tmp_path / "voice.wav"
    dexed_target(target)
    out = tmp_path / "out" / "patch.syx"
    report = match_from_elsewhere(tmp_path, "dexed", target, out)
    assert report["final"]["metrics"]["mss"] < 2.5  # a human voice the model never saw; the mean preset is ~4.6
    name, normalized = read_preset(out, index=0)  # the written bank loads; its first voice is the match
    assert np.asarray(normalized).shape == (DEXED.n_params,)
