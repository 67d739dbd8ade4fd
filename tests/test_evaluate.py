"""``python -m training.evaluate`` with a tiny trained run: in-domain (factory presets) with every
method and baseline, out of domain (a folder of audio files), reports written, bad options."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from test_match import ensure_tiny_run, karplus_strong  # noqa: E402  (tests/ is on sys.path under pytest)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return ensure_tiny_run(tmp_path_factory.getbasetemp() / "tiny")


@pytest.mark.plugin
def test_evaluate_factory_every_method(tiny_run, tmp_path, capsys):
    from training.evaluate import main

    out = tmp_path / "eval" / "factory.json"
    rc = main(["--run", str(tiny_run), "--targets", "factory", "--n", "2", "--json", str(out),
               "--refine-steps", "2", "--snapshots", "1", "--refine-batch", "1", "--search-renders", "6",
               "--cma-renders", "8",
               "--param-run", str(tiny_run), "--examples", "1"])
    stdout = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out.read_text())
    methods = result["methods"]
    assert list(methods) == ["model", "model+refine", "model+best_of_k", "model+proxy_search", "model+search",
                             "mean_preset", "random_preset", "nearest_neighbour", "param_only", "cma_mean"]
    for name, m in methods.items():
        assert m["n_ok"] == 2, name
        for key in ("mss", "logmel_l1", "mfcc_l1", "lsd_db", "spectral_convergence", "param_mae", "cat_acc"):
            assert m["metrics"][key] is not None and np.isfinite(m["metrics"][key]), (name, key)
        assert m["seconds_per_target"] >= 0
    assert methods["cma_mean"]["renders_per_target"] == 8 and methods["model+search"]["renders_per_target"] == 1 + 6
    assert methods["model+refine"]["renders_per_target"] == 1 + 1
    assert methods["model+proxy_search"]["renders_per_target"] == 0  # the proxy only
    assert methods["model+best_of_k"]["renders_per_target"] == 0
    # the tiny run's 4 candidates (eval.best_of_k) and its 2 nearest gallery sounds' presets
    # (eval.lookup_candidates) ranked by the proxy, then 2 rounds of 4 proxy renders
    assert methods["model+best_of_k"]["proxy_renders_per_target"] == 4
    assert methods["model+proxy_search"]["proxy_renders_per_target"] == 4 + 2 + 2 * 4
    # the same network, the same presets
    assert methods["param_only"]["metrics"]["mss"] == pytest.approx(methods["model"]["metrics"]["mss"])
    # refinement and search start from the prediction and keep it unless a plugin render beats it
    for t in result["per_target"]:
        assert t["mss"]["model+refine"] <= t["mss"]["model"] + 1e-6
        assert t["mss"]["model+search"] <= t["mss"]["model"] + 1e-6
    # numbers of the tiny run that catch regressions: refinement helps on these targets, a random
    # preset is far off, and CMA-ES's selection score is what its preset scores when re-rendered
    mss = {name: m["metrics"]["mss"] for name, m in methods.items()}
    assert mss["model+refine"] < 0.9 * mss["model"], mss
    assert mss["model+proxy_search"] < mss["model"], mss  # proxy renders track the plugin's
    assert mss["model+proxy_search"] <= mss["model+best_of_k"] + 0.02, mss  # the search starts from that pick
    assert mss["random_preset"] > 1.2 * mss["model"], mss
    assert methods["cma_mean"]["selection_mean_mss"] == pytest.approx(mss["cma_mean"], rel=0.05)
    curve = methods["model+refine"]["curve"]
    assert curve["steps"] == [0, 2] and curve["mean_mss"][1] <= curve["mean_mss"][0] + 1e-9
    assert curve["seconds_per_target"][1] >= curve["seconds_per_target"][0] > 0
    assert len(result["bars"]) == 2 and all(b["passed"] in (True, False) for b in result["bars"])
    assert "cma_mean_to_reach_model_refine" in result
    md = out.with_suffix(".md").read_text()
    assert "| model+refine |" in md and "factory-example-0.png" in md
    assert out.with_name("factory-example-0.png").read_bytes()[:4] == b"\x89PNG"
    html = out.with_suffix(".html").read_text()
    assert html.count("<audio") == 1 + 6 and "id='methods'" in html  # target + 6 shown methods
    assert re.search(r"^model\+refine\s", stdout, re.M) and ("[PASS]" in stdout or "[FAIL]" in stdout)


@pytest.mark.plugin
def test_evaluate_folder_out_of_domain(tiny_run, tmp_path):
    import soundfile as sf

    from training.evaluate import main

    folder = tmp_path / "sounds"
    folder.mkdir()
    karplus_strong(folder / "a-pluck.flac", f0_hz=220.0)  # A3: not the run's note 60
    sf.write(folder / "b-silent.wav", np.zeros((8000, 2)), 16000)
    (folder / "readme.txt").write_text("not audio")
    out = tmp_path / "ood.json"
    rc = main(["--run", str(tiny_run), "--targets", str(folder), "--n", "5", "--json", str(out),
               "--refine-steps", "0", "--search-renders", "0", "--proxy-search-rounds", "1", "--cma-renders", "4",
               "--no-dataset",
               "--examples", "1"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["n"] == 1 and result["per_target"][0]["name"] == "a-pluck.flac"
    assert any("skipped b-silent.wav" in n and "silence" in n for n in result["notes"])
    assert list(result["methods"]) == ["model", "model+best_of_k", "model+proxy_search", "mean_preset",
                                       "random_preset", "cma_mean"]
    # the pluck's own note (pYIN), not the run's: the search renders the proxy at that note
    assert result["per_target"][0]["note"] == 57
    assert np.isfinite(result["methods"]["model+proxy_search"]["metrics"]["mss"])
    # without the training set no gallery presets join the ranking, and the result says so
    assert result["methods"]["model+proxy_search"]["proxy_renders_per_target"] == 4 + 1 * 4
    assert any("--no-dataset: no gallery presets" in n for n in result["notes"])
    assert "param_mae" not in result["methods"]["model"]["metrics"]  # out of domain: no parameters
    assert [b["passed"] for b in result["bars"]] == [None, None]
    assert out.with_suffix(".html").is_file()


@pytest.mark.parametrize("argv, pattern", [
    (["--targets", "nowhere"], r"--targets: expected random, factory, or an existing folder"),
    (["--targets", "factory", "--n", "0"], r"--n: expected an integer in 1\.\.100000, got '0'"),
    (["--targets", "factory", "--refine-steps", "-3"], r"--refine-steps: expected an integer >= 0, got '-3'"),
    (["--targets", "factory", "--proxy-search-rounds", "-1"],
     r"--proxy-search-rounds: expected an integer in 0\.\.64, got '-1'"),
    (["--targets", "factory", "--json", "out.txt"], r"--json: expected a file name ending in \.json"),
])
def test_bad_options(argv, pattern, tmp_path, capsys):
    from training.evaluate import main

    run = tmp_path / "run"
    (run / "checkpoints" / "best" / "1").mkdir(parents=True)
    from training.config import load_config

    (run / "config.json").write_text(json.dumps(load_config(None).to_dict()))
    assert main(["--run", str(run), *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and "fix:" in err, err


def test_find_param_run_prefers_the_same_setup(tmp_path):
    from training.config import load_config
    from training.evaluate import find_param_run

    def make(name, overrides, checkpoint=True):
        d = tmp_path / name
        (d / "checkpoints" / "best" / ("1" if checkpoint else "")).mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(load_config(None, overrides).to_dict()))
        return d

    run = make("hybrid", ["loss.schedule=hybrid"])
    assert find_param_run(run, load_config(None, ["loss.schedule=hybrid"])) == (None, [])
    make("other-note", ["loss.schedule=param", "data.note=48"])  # other sounds: never chosen
    make("no-ckpt", ["loss.schedule=param"], checkpoint=False)
    loose = make("param-wide", ["loss.schedule=param", "model.hidden=64"])
    cfg = load_config(None, ["loss.schedule=hybrid"])
    assert find_param_run(run, cfg) == (loose, ["model.hidden"])
    exact = make("param", ["loss.schedule=param", "data.workers=1"])
    assert find_param_run(run, cfg) == (exact, [])
    # a run made before a key existed (its config.json lacks it) did what the key's default does
    old = json.loads((exact / "config.json").read_text())
    del old["data"]["train_on_gallery"]
    (exact / "config.json").write_text(json.dumps(old))
    assert find_param_run(run, cfg) == (exact, [])


@pytest.mark.plugin
@pytest.mark.parametrize("best_of_k", [4, 0])
def test_model_rows_rank_lookup_presets_with_the_models_candidates(tiny_run, best_of_k):
    """``eval.lookup_candidates``' presets join the model's candidates in one proxy ranking (also
    without best-of-k): given each target's own preset among them, the search starts there and keeps
    it (nothing beats the right answer); the rows say what they spent."""
    import dataclasses

    from proxies.amsynth.spec import uses_noise
    from training.data import EngineRenderer, split_presets
    from training.evaluate_core import load_predictor, model_rows

    pred = load_predictor(tiny_run)
    cfg = pred.cfg
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, best_of_k=best_of_k, proxy_search_rounds=2,
                                                            proxy_search_candidates=4))
    pred = dataclasses.replace(pred, cfg=cfg)
    presets = split_presets(cfg.data, "test")
    presets = presets[~uses_noise(presets)][:3]
    with EngineRenderer(cfg.data) as renderer:
        audio, ok = renderer.render(presets)
    assert ok.all()
    others = split_presets(cfg.data, "val")[:3]
    lookup = np.stack([others, presets], axis=1)  # [N, 2, n_params]: a wrong preset, then the right one
    rows = model_rows(pred, audio, None, seed=0, lookup=lookup)
    assert ("model+best_of_k" in rows) == (best_of_k > 0)
    if best_of_k:
        assert rows["model+best_of_k"].proxy_renders == best_of_k
        assert not np.allclose(rows["model+best_of_k"].presets, presets)  # the lookup is not the model's row
    search = rows["model+proxy_search"]
    assert search.proxy_renders == max(best_of_k, 1) + 2 + 2 * 4
    np.testing.assert_allclose(search.presets, presets)
