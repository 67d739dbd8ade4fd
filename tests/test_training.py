"""Training: config checks, heads from the spec, losses and gradients, and a tiny end-to-end fit
through the real plugin (with resume after an interruption)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.config import Config, ConfigError, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


# ------------------------------------------------------------------------------------ config
def test_every_shipped_config_loads():
    assert CONFIGS, "configs/*.toml missing"
    names = set()
    for path in CONFIGS:
        cfg = load_config(path)
        assert isinstance(cfg, Config)
        names.add(cfg.run.name)
    assert len(names) == len(CONFIGS), "two shipped configs write to the same runs/<name>/"


def test_default_config_is_the_documented_default():
    cfg = load_config(ROOT / "configs" / "amsynth.toml")
    assert (cfg.model.kind, cfg.features.kind) == ("cnn", "logmel")
    assert cfg.data.n_samples == round(cfg.data.sample_rate * cfg.data.duration_s)


def test_unknown_key_names_key_and_allowed(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate.*expected one of.*\blr\b"):
        load_config(p)


def test_unknown_section(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[optimizer]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config section \[optimizer\].*\[optim\]"):
        load_config(p)


@pytest.mark.parametrize("override, pattern", [
    ("model.kind=transformer", r"model\.kind.*'cnn', 'lstm', 'rawcnn'"),
    ("loss.schedule=warm", r"loss\.schedule.*'param', 'spectral', 'hybrid'"),
    ("optim.lr=-1", r"optim\.lr: expected a learning rate in \(0, 1\], got -1"),
    ("optim.steps=1.5", r"optim\.steps: expected an integer, got 1\.5"),
    ("data.n_train=many", r"data\.n_train: expected an integer, got 'many'"),
    ("features.n_fft=1000", r"features\.n_fft: expected a power of two"),
    ("loss.fft_sizes=[64, 100]", r"loss\.fft_sizes: expected 1 or more powers of two"),
    ("data.hold_s=5.0", r"data\.hold_s.*duration_s"),
    ("eval.n_random=100000", r"eval\.n_random.*data\.n_test"),
    ("data.frozen={ nonsense = 0.5 }", r"data\.frozen\.nonsense.*no parameter"),
    ("data.factory_prior_weight=1.5", r"data\.factory_prior_weight.*\[0, 1\]"),
    ("model.head=diffusion", r"model\.head.*'regression', 'bins', 'mixture', 'flow'"),
    ("model.flow_steps=0", r"model\.flow_steps: expected an integer in \[1, 256\], got 0"),
])
def test_bad_values_fail_before_any_work(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(ROOT / "configs" / "amsynth.toml", [override])


@pytest.mark.parametrize("override, pattern", [
    ("optim.lr", r"expected section\.key=value"),
    ("lr=0.1", r"exactly one dot"),
    ("optimizer.lr=0.1", r"unknown section 'optimizer'"),
    ("optim.nope=1", r"unknown key optim\.nope"),
])
def test_bad_set_syntax(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_set_overrides_are_typed():
    cfg = load_config(ROOT / "configs" / "amsynth.toml",
                      ["optim.lr=3e-4", "run.name=try2", "loss.fft_sizes=[256, 1024]", "optim.steps=7",
                       "data.frozen={ osc2_sync = 0.0 }"])
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.run.name == "try2" and cfg.optim.steps == 7
    assert cfg.loss.fft_sizes == (256, 1024) and dict(cfg.data.frozen) == {"osc2_sync": 0.0}
    assert parse_override("optim.lr=1")[2] == 1
    cfg2 = load_config(None, ["data.sample_rate=8000", "features.f_max_hz=4000", "data.duration_s=0.5",
                                 "data.hold_s=0.3"])
    assert cfg2.data.n_samples == 4000
    with pytest.raises(TypeError):
        cfg.data.frozen["x"] = 1.0  # configs are immutable
    # int -> float is accepted, float -> int is not
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


def test_cli_exits_with_config_error_before_work(tmp_path):
    r = subprocess.run([sys.executable, "-m", "training.fit", "--config", str(ROOT / "configs" / "amsynth.toml"),
                        "--set", "model.kind=mlp", "--set", f"run.runs_dir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "model.kind" in r.stderr and "'cnn'" in r.stderr
    assert not any(tmp_path.iterdir())


def test_extends_merges_tables_and_refuses_cycles(tmp_path):
    (tmp_path / "base.toml").write_text("[optim]\nlr = 0.01\nsteps = 9\n[run]\nname = 'base'\n")
    (tmp_path / "child.toml").write_text("extends = 'base.toml'\n[optim]\nsteps = 3\n")
    cfg = load_config(tmp_path / "child.toml")
    assert (cfg.optim.lr, cfg.optim.steps, cfg.run.name) == (0.01, 3, "base")
    (tmp_path / "a.toml").write_text("extends = 'b.toml'\n")
    (tmp_path / "b.toml").write_text("extends = 'a.toml'\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "bad.toml").write_text("extends = 'base.toml'\n[optim]\nlr_max = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key optim\.lr_max"):
        load_config(tmp_path / "bad.toml")


def test_config_round_trips_through_dict():
    from training.config import from_dict

    cfg = load_config(ROOT / "configs" / "amsynth.toml", ["data.frozen={ osc2_sync = 1.0 }"])
    assert from_dict(cfg.to_dict()) == cfg


def test_a_run_made_before_a_key_existed_resumes_with_its_default(tmp_path):
    """A run whose config.json lacks a key added since (here data.train_on_gallery) resumes when the
    config gives that key its default, and is refused when it gives another value."""
    from training.train import _check_and_write_config

    cfg = load_config(ROOT / "configs" / "amsynth.toml", [f"run.runs_dir={tmp_path}"])
    old = cfg.to_dict()
    del old["data"]["train_on_gallery"]
    run = tmp_path / "amsynth"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(old))
    _check_and_write_config(cfg, run)  # no error: the default is what the old run did
    assert json.loads((run / "config.json").read_text())["data"]["train_on_gallery"] is False
    (run / "config.json").write_text(json.dumps(old))
    other = load_config(ROOT / "configs" / "amsynth.toml", [f"run.runs_dir={tmp_path}", "data.train_on_gallery=true"])
    with pytest.raises(ConfigError, match=r"different config \(data.train_on_gallery: False -> True\)"):
        _check_and_write_config(other, run)


# ------------------------------------------------------------------------------------ heads and models
def _layout(frozen=None):
    from proxies.amsynth.spec import AMSYNTH
    from training.heads import head_layout

    return head_layout(AMSYNTH, frozen)


def test_head_layout_derives_from_the_spec():
    from proxies.amsynth.spec import AMSYNTH

    layout = _layout()
    fixed = {p.name for p in AMSYNTH.params if p.prior == "fixed"}
    assert fixed == {"portamento_time", "keyboard_mode", "portamento_mode"}
    learned = set(layout.continuous) | set(layout.categorical)
    assert learned == set(AMSYNTH.learned_indices)
    assert all(AMSYNTH.params[i].is_categorical for i in layout.categorical)
    assert not any(AMSYNTH.params[i].is_categorical for i in layout.continuous)
    assert layout.n_choices == tuple(len(AMSYNTH.params[i].choices) for i in layout.categorical)
    assert dict(zip(layout.categorical_names, layout.n_choices))["osc2_pitch"] == 25
    frozen = _layout({"osc2_sync": 1.0, "amp_attack": 0.25})
    assert AMSYNTH.index_of("osc2_sync") not in frozen.categorical
    assert AMSYNTH.index_of("amp_attack") not in frozen.continuous
    assert frozen.base_normalized[AMSYNTH.index_of("amp_attack")] == 0.25


@pytest.mark.parametrize("kind, features, shape, head", [
    ("cnn", "logmel", (2, 17, 32), "regression"),
    ("lstm", "mfcc", (2, 17, 13), "regression"),
    ("rawcnn", "raw", (2, 4000), "regression"),
    ("cnn", "logmel", (2, 17, 32), "bins"),
    ("cnn", "logmel", (2, 17, 32), "mixture"),
    ("cnn", "logmel", (2, 17, 32), "flow"),
])
def test_model_heads_have_the_spec_shapes(kind, features, shape, head):
    from training.heads import note_features
    from training.models import make_model

    cfg = load_config(None, [f"model.kind={kind}", f"features.kind={features}", "model.channels=[4, 8]",
                             "model.hidden=16", "model.lstm_hidden=8", "model.lstm_layers=1", "model.raw_filters=8",
                             f"model.head={head}", "model.bins=8", "model.hypotheses=3", "model.flow_hidden=16",
                             "model.flow_steps=4"])
    layout = _layout()
    model = make_model(cfg.model, layout)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    note = note_features(jnp.asarray([36, 84]), jnp.asarray([100, 60]))
    params = model.init(jax.random.key(0), x, note)
    pred = model.apply(params, x, note)
    assert pred["continuous"].shape == (2, layout.n_continuous)
    assert bool(jnp.all((pred["continuous"] >= 0) & (pred["continuous"] <= 1)))
    assert tuple(l.shape for l in pred["logits"]) == tuple((2, k) for k in layout.n_choices)
    if head == "bins":
        assert pred["bins"].shape == (2, layout.n_continuous, 8)
    if head == "mixture":
        assert pred["hyp_continuous"].shape == (2, 3, layout.n_continuous)
        top = np.argmax(np.asarray(pred["hyp_score"]), axis=1)
        assert np.allclose(pred["continuous"], np.asarray(pred["hyp_continuous"])[np.arange(2), top])
    if head == "flow":
        assert pred["flow_h"].shape == (2, 16)
    # the note is heard: another note, another prediction (an untrained flow is the identity map of its
    # noise, so its one preset is the same for every sound; its decoder's choices are not)
    other = model.apply(params, x, note[::-1])
    key = "logits" if head == "flow" else "continuous"
    assert not np.allclose(np.asarray(jax.tree.leaves(other[key])[0]), np.asarray(jax.tree.leaves(pred[key])[0]))


def test_prediction_to_presets_round_trip():
    from proxies.amsynth.spec import AMSYNTH
    from training.heads import hard_normalized, onehot_prediction, relaxed_inputs

    layout = _layout()
    presets = AMSYNTH.sample_normalized(np.random.default_rng(1), 5)
    pred = onehot_prediction(layout, presets)
    back = np.asarray(hard_normalized(layout, pred))
    assert np.allclose(AMSYNTH.snap_normalized(back), presets, atol=1e-6)
    normalized, probs = relaxed_inputs(layout, pred)
    assert set(probs) == set(layout.categorical_names)
    assert all(p.shape == (5, k) for p, k in zip(probs.values(), layout.n_choices))
    assert np.allclose(np.asarray(normalized), back)


# ------------------------------------------------------------------------------------ losses
def test_param_loss_is_zero_at_target_and_gradients_are_finite():
    from proxies.amsynth.spec import AMSYNTH
    from training.heads import onehot_prediction, targets_from_normalized
    from training.losses import param_loss

    layout = _layout()
    presets = AMSYNTH.sample_normalized(np.random.default_rng(2), 4)
    targets = targets_from_normalized(layout, presets)
    perfect = onehot_prediction(layout, presets, confidence=60.0)
    loss, aux = param_loss(perfect, targets, categorical_weight=1.0)
    assert float(loss) < 1e-6 and float(aux["param_acc"]) == 1.0
    # gradients at the range edges and in the middle of the sigmoid and softmax
    for value in (0.0, 0.5, 1.0):
        pred = {"continuous": jnp.full((4, layout.n_continuous), value),
                "logits": tuple(jnp.zeros((4, k)) for k in layout.n_choices)}
        g = jax.grad(lambda p: param_loss(p, targets, 0.1)[0])(pred)
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(g))
        assert float(jnp.abs(g["continuous"]).sum()) > 0


def test_schedules():
    from training.losses import schedule_weights

    cfg = load_config(None, ["loss.schedule=hybrid", "loss.warmup_steps=10", "loss.ramp_steps=4",
                             "loss.hybrid_param_weight_end=0.2", "loss.spectral_weight=1.0"]).loss
    assert schedule_weights(0, cfg) == (1.0, 0.0) and schedule_weights(9, cfg) == (1.0, 0.0)
    w = [schedule_weights(s, cfg) for s in range(10, 16)]
    assert [round(x[1], 3) for x in w] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert w[-1][0] == pytest.approx(0.2)
    assert schedule_weights(5, load_config(None, ["loss.schedule=param"]).loss) == (1.0, 0.0)
    assert schedule_weights(5, load_config(None, ["loss.schedule=spectral"]).loss) == (0.0, 2.0)


def _standin_render(normalized, probs, key, pitch=None, velocity=None, n=2048, sr=16000):
    """TEST-ONLY stand-in for a differentiable proxy: a decaying sine whose pitch, level and
    decay follow three normalized parameters; the waveform's 'probabilities' blend in a square.
    Never used outside this file."""
    t = jnp.arange(n) / sr
    f = 100.0 + 2000.0 * normalized[:, 18:19]
    level = 0.1 + 0.9 * normalized[:, 14:15]
    decay = 1.0 + 20.0 * normalized[:, 1:2]
    sine = jnp.sin(2 * jnp.pi * f * t)
    mix = probs["osc1_waveform"][:, 1:2]
    wave = (1 - mix) * sine + mix * jnp.tanh(5 * sine)
    mono = level * wave * jnp.exp(-decay * t)
    return jnp.stack([mono, mono], axis=1)


@pytest.mark.parametrize("balance, relaxation", [("false", "softmax"), ("true", "straight_through")])
def test_spectral_loss_trains_through_a_differentiable_render(balance, relaxation):
    """The spectral path of train_step (relaxed inputs -> render -> MSS) with a stand-in render."""
    import functools

    from proxies.amsynth.spec import AMSYNTH
    from training.features import make_feature_fn
    from training.proxy_loss import make_distance_fn
    from training.train import create_train_state, train_step

    cfg = load_config(None, ["data.sample_rate=16000", "data.duration_s=0.128", "data.hold_s=0.1",
                             "features.n_fft=256", "features.hop=64", "features.n_mels=16", "features.n_mfcc=13",
                             "model.channels=[4]",
                             "model.hidden=16", "loss.fft_sizes=[128, 256]", "optim.lr=3e-3",
                             "optim.lr_schedule=constant", "optim.lr_warmup_steps=0", "optim.steps=40",
                             "optim.batch_size=4", "data.n_train=4", "loss.spectral_params=[\"all\"]",
                             f"loss.balance_spectral_grads={balance}", f"loss.categorical_relaxation={relaxation}"])
    layout = _layout()
    presets = AMSYNTH.sample_normalized(np.random.default_rng(3), 4)
    p = jnp.asarray(presets, jnp.float32)
    probs = {"osc1_waveform": jax.nn.one_hot((AMSYNTH.category_of(presets)[:, 4] == 1).astype(int), 5)}
    audio = _standin_render(p, probs, None)
    feature_fn = make_feature_fn(cfg.features, cfg.data.sample_rate)
    state = create_train_state(cfg, layout, feature_fn, np.asarray(audio))
    step = jax.jit(functools.partial(train_step, loss_cfg=cfg.loss, layout=layout, feature_fn=feature_fn,
                                     render_fn=_standin_render, distance_fn=make_distance_fn(cfg.loss)))
    batch = {"audio": audio, "normalized": p, "pitch": jnp.full((4,), 60, jnp.int32),
             "velocity": jnp.full((4,), 100, jnp.int32)}
    weights = jnp.asarray([0.0, 1.0])
    losses = []
    for s in range(40):
        state, m = step(state, batch, weights, jax.random.key(s))
        losses.append(float(m["spectral"]))
        assert np.isfinite(float(m["grad_norm"])) and float(m["grad_norm"]) > 0
    # balanced gradients descend steadily; unbalanced ones (pitch-like parameters dominate) are noisy,
    # so for them the second half's best step is what must be 10 % below the start
    reached = np.mean(losses[-5:]) if cfg.loss.balance_spectral_grads else min(losses[20:])
    assert reached < 0.9 * losses[0], " ".join(f"{x:.3f}" for x in losses)


# ------------------------------------------------------------------------------------ end to end
def _tiny_fit_config(tmp_path: Path, name: str, *extra: str) -> Config:
    return load_config(ROOT / "configs" / "amsynth.toml", [
        f"run.name={name}", f"run.runs_dir={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'data'}",
        "data.n_train=16", "data.n_val=4", "data.n_test=4", "data.shard_size=8", "data.workers=1",
        "data.duration_s=0.25", "data.hold_s=0.15", "features.n_fft=512", "features.hop=128", "features.n_mels=32",
        "model.channels=[4, 8]", "model.hidden=16", "loss.schedule=param", "loss.fft_sizes=[128, 512]",
        "optim.batch_size=4", "optim.steps=6", "optim.log_every=1", "optim.eval_every=3",
        "optim.checkpoint_every=2", "optim.lr_warmup_steps=0", "eval.n_random=4", "eval.n_factory=3",
        "eval.batch_size=4", "eval.proxy_search_rounds=1", "eval.proxy_search_candidates=2", "eval.best_of_k=3",
        # the refine row's compilation and the gallery's presets only where they are checked
        "eval.proxy_refine_steps=0", "eval.lookup_candidates=0", *extra])


def _losses(run_dir: Path) -> list[tuple[str, str]]:
    with open(run_dir / "metrics" / "train.csv") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.plugin
def test_fit_end_to_end_through_the_real_plugin_and_resume(tmp_path, amsynth_path):
    from training.evaluate_core import load_predictor
    from training.train import train_and_evaluate

    cfg = _tiny_fit_config(tmp_path, "full", "eval.proxy_refine_steps=2", "eval.lookup_candidates=2")
    summary = train_and_evaluate(cfg, progress=False, log=lambda *_: None)
    run = cfg.run_dir
    written = json.loads((run / "summary.json").read_text())
    assert written["config"] == cfg.to_dict() and written["wall_seconds"] > 0
    for set_name in ("random", "factory"):
        for method in ("model", "model+best_of_k", "model+proxy_search", "model+proxy_refine", "mean_preset",
                       "nearest_neighbour"):
            m = written["eval"][set_name][method]
            for key in ("mss", "logmel_l1", "mfcc_l1", "param_mae"):
                assert np.isfinite(m[key]), (set_name, method, key)
        rows = written["eval"][set_name]
        assert (rows["model"]["proxy_renders"], rows["model+best_of_k"]["proxy_renders"],
                rows["model+proxy_search"]["proxy_renders"], rows["model+proxy_refine"]["proxy_renders"]) == \
            (0, 3, 3 + 2 + 2, 3 + 2 + 2 + 1)  # 3 candidates and 2 gallery presets ranked, then 2 / 2 + 1
    assert summary["eval"] == written["eval"]
    assert list(written["eval_methods"]) == ["model", "model+best_of_k", "model+proxy_search", "model+proxy_refine",
                                             "mean_preset", "nearest_neighbour"]
    assert [s for s, _ in _losses(run)] == [str(s) for s in range(1, 7)]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "best").is_dir() and (run / "checkpoints" / "latest" / "6").is_dir()

    # interrupted after step 4 (last checkpoint), then rerun: resumes and reproduces the curve
    cfg2 = _tiny_fit_config(tmp_path, "interrupted")
    assert train_and_evaluate(cfg2, progress=False, stop_after_step=3, log=lambda *_: None) is None
    assert not (cfg2.run_dir / "summary.json").exists()
    logs: list[str] = []
    train_and_evaluate(cfg2, progress=False, log=logs.append)
    assert any("resuming" in m and "from step 3" in m for m in logs), logs
    assert _losses(cfg2.run_dir) == _losses(run)
    a = load_predictor(run, "latest").params
    b = load_predictor(cfg2.run_dir, "latest").params
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    # a different config refuses to resume into the same run directory
    with pytest.raises(ConfigError, match="different config"):
        train_and_evaluate(_tiny_fit_config(tmp_path, "full", "optim.lr=0.01"), progress=False,
                           log=lambda *_: None)


@pytest.mark.plugin
@pytest.mark.parametrize("head", ["bins", "mixture", "flow"])
def test_fit_on_many_notes_with_a_many_answer_head(tmp_path, amsynth_path, head):
    """Training presets play notes 40..80 at velocities 60..127 (the model is told which); the held-out set
    plays data.note, and so does the nearest-neighbour gallery (the training presets rendered again)."""
    from training.data import build_dataset
    from training.evaluate_core import load_predictor
    from training.train import train_and_evaluate

    cfg = _tiny_fit_config(tmp_path, head, f"model.head={head}", "model.bins=8", "model.hypotheses=3",
                           "model.flow_hidden=32", "model.flow_steps=4",
                           "data.note_range=[40, 80]", "data.velocity_range=[60, 127]", "data.train_on_gallery=true")
    ds = build_dataset(cfg.data, progress=False, log=lambda *_: None)
    assert ds.train.pitch.min() >= 40 and ds.train.pitch.max() <= 80 and len(set(ds.train.pitch.tolist())) > 4
    assert len(set(ds.train.velocity.tolist())) > 4 and set(ds.test.pitch.tolist()) == {60}
    assert ds.gallery is not None and set(ds.gallery.pitch.tolist()) == {60}
    assert np.array_equal(ds.gallery.normalized, ds.train.normalized)
    # a training preset played at another note sounds different from its gallery render
    moved = ds.train.pitch != 60
    assert np.abs(ds.train.audio[moved].astype(np.float32) - ds.gallery.audio[moved].astype(np.float32)).max() > 0.01
    # data.train_on_gallery: the model trains on both renders of each preset; the setting chooses what
    # training reads, not what is rendered (the same dataset folder either way)
    both, n = ds.training_split(True), len(ds.train)
    assert len(both) == 2 * n and np.array_equal(both.audio[:n], ds.train.audio)
    assert np.array_equal(both.audio[n:], ds.gallery.audio) and set(both.pitch[n:].tolist()) == {60}
    assert np.array_equal(both.normalized[n:], both.normalized[:n]) and ds.training_split(False) is ds.train
    alone = dataclasses.replace(cfg.data, train_on_gallery=False)
    assert build_dataset(alone, progress=False, log=lambda *_: None).root == ds.root
    logs: list[str] = []
    summary = train_and_evaluate(cfg, progress=False, log=logs.append)
    assert any(f"training on {2 * n} sounds" in m for m in logs), logs
    for set_name in ("random", "factory"):
        rows = summary["eval"][set_name]
        assert all(np.isfinite(rows[m]["mss"]) for m in ("model", "model+best_of_k", "model+proxy_search"))
    pred = load_predictor(cfg.run_dir)
    out = pred.outputs(ds.test.audio.astype(np.float32))
    cands = pred.candidates(out, 5, seed=1)
    assert cands.shape == (len(ds.test), 5, pred.layout.spec.n_params)
    assert np.allclose(cands[:, 0], pred.presets(out))  # candidate 0 is the one preset
    assert len({tuple(np.round(c, 6)) for c in cands[0]}) == 5  # the others are other answers


@pytest.mark.plugin
@pytest.mark.slow
def test_fit_kill_9_then_rerun_finishes(tmp_path, amsynth_path):
    """kill -9 in the middle of training; the same command then resumes and finishes."""
    import signal
    import time

    cfg = _tiny_fit_config(tmp_path, "killed", "optim.steps=40", "optim.checkpoint_every=5",
                           "optim.eval_every=20", "optim.log_every=5")
    overrides = [f"{s}.{k}={json.dumps(v) if not isinstance(v, str) else v}"
                 for s, t in cfg.to_dict().items() for k, v in t.items() if k != "frozen"]
    cmd = [sys.executable, "-m", "training.fit", "--config", str(ROOT / "configs" / "amsynth.toml"), "--no-progress"]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    latest = cfg.run_dir / "checkpoints" / "latest"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())):
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (cfg.run_dir / "summary.json").exists()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout
    assert (cfg.run_dir / "summary.json").is_file()
    assert [s for s, _ in _losses(cfg.run_dir)] == [str(s) for s in range(5, 41, 5)]


def test_balanced_spectral_gradients_equalise_parameters():
    from training.losses import balance_gradients

    cont = jnp.full((4, 3), 0.5)
    logits = (jnp.zeros((4, 2)),)

    def loss(c, l, strength):
        c, l = balance_gradients(c, l, strength)
        # column 0 matters 1000x more than column 1; column 2 not at all; the logits somewhat
        return jnp.sum(1000.0 * c[:, 0] ** 2 + c[:, 1] ** 2) + 10.0 * jnp.sum(l[0] * jnp.arange(2.0))

    g_c, g_l = jax.grad(loss, argnums=(0, 1))(cont, logits, jnp.asarray(2.0))
    rms = jnp.sqrt(jnp.mean(g_c ** 2, axis=0))
    assert float(rms[0]) == pytest.approx(float(rms[1]), rel=1e-5)  # equal shares
    assert float(rms[2]) == 0.0  # no gradient stays no gradient
    assert float(rms[0]) == pytest.approx(2.0 / (4 * 4), rel=1e-5)  # strength / (batch x parameters)
    assert float(jnp.sqrt(jnp.mean(g_l[0] ** 2))) == pytest.approx(2.0 / 16, rel=1e-5)
    g0 = jax.grad(loss)(cont, logits, jnp.asarray(0.0))
    assert float(jnp.abs(g0).max()) == 0.0


def test_straight_through_renders_hard_choices_with_soft_gradients():
    from training.heads import relaxed_inputs

    layout = _layout()
    logits = tuple(jnp.tile(jnp.linspace(0.0, 1.0, k)[None], (2, 1)) for k in layout.n_choices)
    pred = {"continuous": jnp.full((2, layout.n_continuous), 0.3), "logits": logits}
    _, soft = relaxed_inputs(layout, pred)
    _, hard = relaxed_inputs(layout, pred, straight_through=True)
    for name, k in zip(layout.categorical_names, layout.n_choices):
        assert np.allclose(np.asarray(hard[name]), np.eye(k)[[k - 1, k - 1]])
        assert not np.allclose(np.asarray(soft[name]), np.asarray(hard[name]))

    def f(lg, st):
        _, p = relaxed_inputs(layout, {"continuous": pred["continuous"], "logits": lg}, straight_through=st)
        return sum(jnp.sum(v * jnp.arange(v.shape[-1])) for v in p.values())

    g_soft, g_hard = jax.grad(f)(logits, False), jax.grad(f)(logits, True)
    assert all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(g_soft), jax.tree.leaves(g_hard)))


def test_balancing_floors_numerically_absent_gradients():
    from training.losses import balance_gradients

    def loss(c):
        c, _ = balance_gradients(c, (), jnp.asarray(1.0))
        return jnp.sum(1e6 * c[:, 0] + 1e-6 * c[:, 1])

    g = jax.grad(loss)(jnp.zeros((2, 2)))
    assert float(jnp.abs(g[:, 1]).max()) < 1e-6 * float(jnp.abs(g[:, 0]).max())


def test_spectral_gradient_reaches_only_the_chosen_parameters():
    from proxies.amsynth.spec import AMSYNTH
    from training.losses import spectral_loss
    from training.proxy_loss import make_distance_fn

    layout = _layout()
    presets = AMSYNTH.sample_normalized(np.random.default_rng(4), 2)
    target = _standin_render(jnp.asarray(presets, jnp.float32),
                             {"osc1_waveform": jax.nn.one_hot(jnp.array([1, 2]), 5)}, None)
    dist = make_distance_fn(load_config(None, ["loss.fft_sizes=[128, 256]"]).loss)
    pred = {"continuous": jnp.full((2, layout.n_continuous), 0.4),
            "logits": tuple(jnp.zeros((2, k)) for k in layout.n_choices)}

    def f(p, names):
        return spectral_loss(p, target, layout, _standin_render, dist, jax.random.key(0),
                             spectral_params=names)[0]

    every = jax.grad(f)(pred, ("all",))
    some = jax.grad(f)(pred, ("amp_decay",))
    col = {AMSYNTH.params[i].name: j for j, i in enumerate(layout.continuous)}
    for name in ("amp_decay", "master_vol", "osc_mix"):
        assert float(jnp.abs(every["continuous"][:, col[name]]).max()) > 0, name
    assert float(jnp.abs(some["continuous"][:, col["amp_decay"]]).max()) > 0
    others = [j for n, j in col.items() if n != "amp_decay"]
    assert float(jnp.abs(some["continuous"][:, others]).max()) == 0.0
    assert all(float(jnp.abs(l).max()) == 0.0 for l in some["logits"])
    assert float(jnp.abs(every["logits"][layout.categorical_names.index("osc1_waveform")]).max()) > 0


def test_spectral_params_are_checked():
    with pytest.raises(ConfigError, match=r"loss\.spectral_params.*learned.*got 'keyboard_mode'"):
        load_config(None, ['loss.spectral_params=["keyboard_mode"]'])
    with pytest.raises(ConfigError, match=r"loss\.spectral_params.*got 'amp_attack'"):
        load_config(None, ['loss.spectral_params=["amp_attack"]', "data.frozen={ amp_attack = 0.0 }"])


def test_defaults_match_the_default_config_file():
    """Keys left out of a config take the values of configs/amsynth.toml (one source of truth)."""
    shipped = load_config(ROOT / "configs" / "amsynth.toml").to_dict()
    defaults = load_config(None).to_dict()
    for section in ("data", "features", "model", "loss", "optim", "eval"):
        for key, value in shipped[section].items():
            assert defaults[section][key] == value, f"{section}.{key}"


def test_gradient_agreement_counts_descent_towards_the_target():
    from training.diagnostics import agreement, categorical_agreement

    grads = np.array([[-1.0, 1.0, 0.0], [-2.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 3.0, 0.0]])
    deltas = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])
    a = agreement(grads, deltas)
    assert a["agreement"].tolist() == [1.0, 0.5, 0.0]  # column 1: rows 1 and 3 descend towards the target
    assert a["weighted"][1] == pytest.approx((1 + 3) / 6)
    assert categorical_agreement(np.array([[-1.0, 0.0], [1.0, 0.0]]), np.array([0, 0])) == 0.5


def test_many_answer_losses_and_candidates():
    """The bins loss is lowest when the true value's bin is the most probable; the mixture loss
    follows the best hypothesis (winner-takes-all) and teaches the score which one won; candidates
    keep the one preset first and differ in the others (drawn from the bins or the hypotheses)."""
    from proxies.amsynth.spec import AMSYNTH
    from training.heads import bin_centers, bins_point, candidate_presets, targets_from_normalized
    from training.losses import param_loss

    layout = _layout()
    presets = AMSYNTH.sample_normalized(np.random.default_rng(5), 3)
    t = targets_from_normalized(layout, presets)
    nb = 8
    centers = np.asarray(bin_centers(nb))
    logits = tuple(10.0 * jax.nn.one_hot(t["choice"][:, j], k) for j, k in enumerate(layout.n_choices))
    near = -0.5 * ((centers - np.asarray(t["continuous"])[..., None]) * (nb - 1)) ** 2
    right = jnp.asarray(near, jnp.float32)  # log of the loss's own soft target: its minimum
    wrong = jnp.roll(right, 4, axis=-1)
    lr, _ = param_loss({"continuous": bins_point(right), "logits": logits, "bins": right}, t, 0.1)
    lw, _ = param_loss({"continuous": bins_point(wrong), "logits": logits, "bins": wrong}, t, 0.1)
    assert float(lr) + 1.0 < float(lw), (float(lr), float(lw))
    assert np.abs(np.asarray(bins_point(right)) - np.asarray(t["continuous"])).max() <= 0.5 / (nb - 1) + 1e-6

    k = 3
    good = jnp.asarray(t["continuous"])
    hyp = jnp.stack([jnp.full_like(good, 0.5), good, 1.0 - good], axis=1)  # hypothesis 1 is right
    hyp_logits = tuple(jnp.repeat(l[:, None], k, axis=1) for l in logits)
    score = jnp.zeros((3, k))
    pred = {"continuous": hyp[:, 0], "logits": logits, "hyp_continuous": hyp, "hyp_logits": hyp_logits,
            "hyp_score": score}
    loss, _ = param_loss(pred, t, 0.1)
    g = jax.grad(lambda s_: param_loss({**pred, "hyp_score": s_}, t, 0.1)[0])(score)
    assert float(g[:, 1].max()) < 0 and float(g[:, 0].min()) > 0  # the score learns that 1 won
    gh = jax.grad(lambda h: param_loss({**pred, "hyp_continuous": h}, t, 0.1)[0])(hyp)
    assert float(jnp.abs(gh[:, 1]).max()) < 1e-6  # the winner is already right: no push
    assert float(jnp.abs(gh[:, 0]).max()) > 0  # the others are pulled a little (relaxed WTA)

    rng = np.random.default_rng(0)
    host = {"continuous": np.asarray(bins_point(right)), "logits": tuple(np.asarray(l) for l in logits),
            "bins": np.asarray(right)}
    c = candidate_presets(layout, host, 6, rng)
    assert c.shape == (3, 6, AMSYNTH.n_params) and np.all((c >= 0) & (c <= 1))
    assert np.allclose(c[:, 0, list(layout.continuous)], AMSYNTH.snap_normalized(
        np.asarray(hard_from(layout, host)))[:, list(layout.continuous)], atol=1e-6)
    mix = {"continuous": np.asarray(hyp[:, 1]), "logits": tuple(np.asarray(l) for l in logits),
           "hyp_continuous": np.asarray(hyp), "hyp_logits": tuple(np.asarray(l) for l in hyp_logits),
           "hyp_score": np.asarray([[0.0, 5.0, 1.0]] * 3)}
    c = candidate_presets(layout, mix, 4, rng)
    cont = list(layout.continuous)
    assert np.allclose(c[:, 0, cont], AMSYNTH.snap_normalized(presets)[:, cont], atol=1e-6)  # the best-scored first
    assert not np.allclose(c[:, 3, cont], c[:, 0, cont])  # beyond the hypotheses: steps around them


def test_flow_head_learns_two_answers_where_regression_averages():
    """Half the presets of one sound have every continuous parameter at 0.2, half at 0.8, their
    categoricals following (choice 0 with the low half, the last with the high): the flow's draws land
    near both answers with their own choices, where the mean (what regression learns) is 0.5; the
    flow-matching loss has finite gradients against finite differences of its velocity weights."""
    import optax

    from proxies.amsynth.spec import AMSYNTH
    from training.heads import head_layout
    from training.losses import FlowFns, param_loss
    from training.models import FlowHeads

    layout = head_layout(AMSYNTH)
    nc = layout.n_continuous
    head = FlowHeads(layout, hidden=64, steps=16)
    b = 64
    high = np.arange(b) % 2 == 1
    cont = np.where(high[:, None], 0.8, 0.2).astype(np.float32) * np.ones((b, nc), np.float32)
    choice = np.stack([np.where(high, k - 1, 0) for k in layout.n_choices], axis=1).astype(np.int32)
    targets = {"continuous": jnp.asarray(cont), "choice": jnp.asarray(choice)}
    h = jnp.ones((b, 8), jnp.float32)  # the same sound for all: the answer is a distribution
    params = head.init(jax.random.key(0), h)

    def loss(p, key):
        pred = head.apply(p, h)
        fns = FlowFns(lambda *a: head.apply(p, *a, method="velocity"), lambda *a: head.apply(p, *a, method="decode"),
                      key)
        return param_loss(pred, targets, 1.0, fns)[0]

    tx = optax.adam(3e-3)
    opt = tx.init(params)
    step = jax.jit(lambda p, o, key: (lambda l_g: (l_g[0], *tx.update(l_g[1], o, p)))(jax.value_and_grad(loss)(p, key)))
    for i in range(400):
        l, upd, opt = step(params, opt, jax.random.key(i))
        params = optax.apply_updates(params, upd)
    y0 = jax.random.normal(jax.random.key(99), (1, 200, nc))
    drawn, logits = head.apply(params, h[:1], y0, method="sample")
    means = np.asarray(drawn)[0].mean(axis=1)  # each draw's mean over the parameters
    assert np.mean(np.abs(means - 0.5) > 0.2) > 0.8, np.histogram(means, bins=6)  # few averaged answers
    assert 0.25 < np.mean(means > 0.5) < 0.75  # both answers drawn
    first = np.asarray(logits[0])[0].argmax(-1)  # the first categorical follows its draw's answer
    assert np.mean(first[means > 0.5] == layout.n_choices[0] - 1) > 0.9 and np.mean(first[means < 0.5] == 0) > 0.9

    # the gradient of the loss is real: a directional finite difference in the velocity weights
    key = jax.random.key(7)
    g = jax.grad(loss)(params, key)
    d = jax.tree.map(lambda x: jnp.asarray(np.random.default_rng(1).normal(size=x.shape), x.dtype), params)
    eps = 1e-2
    shifted = lambda s_: jax.tree.map(lambda p, v: p + s_ * eps * v, params, d)  # noqa: E731
    fd = (float(loss(shifted(1.0), key)) - float(loss(shifted(-1.0), key))) / (2 * eps)
    an = float(sum(jnp.vdot(a, v) for a, v in zip(jax.tree.leaves(g), jax.tree.leaves(d))))
    assert np.isfinite(an) and abs(fd - an) <= 0.05 * abs(an) + 1e-4, (fd, an)


def hard_from(layout, host):
    from training.heads import hard_normalized

    return hard_normalized(layout, host)
