"""Evaluate a trained run against baselines; every preset is re-rendered through the real plugin.

    python -m training.evaluate --run runs/amsynth --targets factory --n 32 [--json OUT.json]
        [--refine-steps 50] [--search-renders 100] [--cma-renders 500] [--param-run runs/<other>]

Targets: ``random`` (held-out presets of the run's test split, rendered by the plugin),
``factory`` (human-made factory presets, a fixed pseudo-random choice), or a folder of audio
files (out of domain: no parameters; conditioned as ``training.match`` does, note per file).

Methods, each scored on the plugin's re-render of its preset:

* ``model``: the run's prediction.
* ``model+refine``: then gradient refinement through the proxy (``--refine-steps``); snapshots
  re-rendered by the plugin, best kept (the prediction included).
* ``model+search``: the prediction, then CMA-ES through the plugin (``--search-renders``).
* ``model+best_of_k``: the model's ``eval.best_of_k`` candidates ranked by the proxy.
* ``model+proxy_search`` / ``model+proxy_refine``: from the best, by the proxy, of those candidates
  and the presets of the target's ``eval.lookup_candidates`` nearest gallery sounds, a search
  through the proxy (``training.proxy_search``; the run's ``eval.proxy_search_*``) / a descent
  through it (``--proxy-refine-steps``); proxy renders only.
* ``mean_preset``, ``random_preset``, ``nearest_neighbour`` (training sound nearest in log-mel).
* ``param_only``: a parameter-loss-only run (``--param-run``, or found beside the run).
* ``cma_mean``: CMA-ES from the mean preset at ``--cma-renders`` (default 500) renders.

Metrics (design.md): mss, log-mel L1 (dB), MFCC L1, log-spectral distance (dB), spectral
convergence; parameter MAE and categorical accuracy for in-domain targets. Wall time per target
counts what a method needs to produce its preset (plugin renders it uses to choose included;
the final scoring render excluded); batched stages report batch time / number of targets.

Writes ``OUT.json``, ``OUT.md`` (+ ``OUT-example-K.png``) and a self-contained ``OUT.html``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from proxies.files import OutputSet
from training.cli import (MatchError, _at_most, _err, _int_option, check_run_dir, output_path, read_run_config,
                          run_cli)
from training.targets import AUDIO_SUFFIXES

#: upper bounds: a typo must not cost days (per target: refinement steps, plugin renders)
MAX_REFINE_STEPS = 10_000
MAX_SEARCH_RENDERS = 20_000
MAX_CMA_RENDERS = 100_000

from training.methods import METHOD_NOTES as METHOD_DESCRIPTIONS  # the one method table

# ------------------------------------------------------------------------------ targets
@dataclass
class TargetSet:
    """Targets conditioned for the run: audio [N, C, T] (scored against), model_input [N, C, T]
    (transposed to the run's ``data.note``: what the nearest-neighbour search and a parameter-only
    run see), heard [N, C, T] and heard_notes [N] (what the run's encoder hears and is told:
    :func:`training.targets.heard`, the target as it is where the run was trained on its note),
    notes [N], names, normalized [N, n_params] or None (out of domain)."""

    kind: str
    names: list[str]
    audio: np.ndarray
    model_input: np.ndarray
    heard: np.ndarray
    heard_notes: np.ndarray
    notes: np.ndarray
    normalized: np.ndarray | None
    notes_text: list[str] = field(default_factory=list)


def load_targets(kind: str, n: int, cfg: Any, renderer: Any, note: int | str = "auto",
                 say: Callable[[str], None] = print) -> TargetSet:
    """The ``n`` targets of ``random``, ``factory`` or a folder (see the module doc)."""
    from training.data import factory_eval_presets, split_presets

    data = cfg.data
    if kind in ("random", "factory"):
        if kind == "random":
            presets = split_presets(data, "test")[:n]
            names = [f"test-{i:04d}" for i in range(len(presets))]
        else:
            names, presets = factory_eval_presets(data, n)
        audio, ok = renderer.render_at(presets, [data.note] * len(presets))
        notes_text = []
        if kind == "factory" and data.factory_prior_weight > 0 and n != cfg.eval.n_factory:
            notes_text.append(f"the run's factory prior holds out the eval.n_factory = {cfg.eval.n_factory} factory "
                              f"presets of its own evaluation; a choice of {n} differs, so some of these targets were "
                              f"in the prior's fit (use --n {cfg.eval.n_factory} for held-out figures)")
        if not ok.all():
            notes_text.append(f"{int((~ok).sum())} target preset(s) failed to render and were dropped")
        names = [nm for nm, k in zip(names, ok) if k]
        at_note = np.full(int(ok.sum()), data.note)
        return TargetSet(kind, names, audio[ok], audio[ok], audio[ok], at_note, at_note, presets[ok], notes_text)
    from training.targets import heard, prepare_target

    folder = Path(kind)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise _err("--targets", f"a folder holding audio files ({', '.join(AUDIO_SUFFIXES)})",
                   f"{str(folder)!r} with none", "point it at a folder of wav/flac/ogg files")
    names, audio, model_input, heard_audio, heard_notes, notes, notes_text = [], [], [], [], [], [], []
    for path in files:
        if len(names) >= n:
            break
        try:
            t = prepare_target(path, data, note, say=lambda m: None)
        except MatchError as e:
            notes_text.append(f"skipped {path.name}: {e}")
            say(f"skipping {path.name}: {e}")
            continue
        h, h_note = heard(t.audio, data, t.note, data.note_range, lambda m: None)
        names.append(path.name)
        audio.append(t.audio)
        model_input.append(t.model_input)
        heard_audio.append(h)
        heard_notes.append(h_note)
        notes.append(t.note)
        if t.note_source != "estimated" or t.note != data.note:
            notes_text.append(f"{path.name}: note {t.note} ({t.note_source})")
    if not names:
        raise _err("--targets", "at least one readable, non-silent audio file", f"none in {str(folder)!r}",
                   "check the files (see the messages above)")
    return TargetSet(str(folder), names, np.stack(audio), np.stack(model_input), np.stack(heard_audio),
                     np.asarray(heard_notes), np.asarray(notes), None, notes_text)


# ------------------------------------------------------------------------------ metrics
@functools.lru_cache(maxsize=4)
def _extra_metric_fn():
    import jax

    from diffsynth import losses

    def f(pred, target):  # [B, C, T] -> per sound, channels averaged
        return {"lsd_db": losses.log_spectral_distance(pred, target).mean(axis=1),
                "spectral_convergence": losses.spectral_convergence(pred, target).mean(axis=1)}

    return jax.jit(f)


def score(audio: np.ndarray, ok: np.ndarray, targets: TargetSet, presets: np.ndarray, layout: Any,
          sample_rate: int, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-target metrics [N] of plugin renders ``audio`` against the targets (NaN where the
    render failed). Parameter metrics only for in-domain targets."""
    import jax.numpy as jnp

    from training.evaluate_core import audio_metrics, param_metrics

    out = {k: np.asarray(v, np.float64) for k, v in audio_metrics(audio, targets.audio, sample_rate).items()}
    fn = _extra_metric_fn()
    extra: dict[str, list[np.ndarray]] = {}
    for a in range(0, len(audio), batch_size):
        m = min(batch_size, len(audio) - a)
        pad = ((0, batch_size - m), (0, 0), (0, 0))
        r = fn(jnp.asarray(np.pad(audio[a:a + m], pad)), jnp.asarray(np.pad(targets.audio[a:a + m], pad)))
        for k, v in r.items():
            extra.setdefault(k, []).append(np.asarray(v, np.float64)[:m])
    out.update({k: np.concatenate(v) for k, v in extra.items()})
    if targets.normalized is not None:
        out.update({k: np.asarray(v, np.float64) for k, v in param_metrics(layout, presets, targets.normalized).items()})
    bad = ~np.asarray(ok, bool)
    for k in out:
        out[k] = np.where(bad | ~np.isfinite(out[k]), np.nan, out[k])
    return out


# ------------------------------------------------------------------------------ baselines
def find_param_run(run: Path, cfg: Any) -> tuple[Path | None, list[str]]:
    """A parameter-loss-only run beside ``run`` with a best checkpoint: ``(path, differences)``.

    It must render the same sounds (synth, sample rate, duration, note, velocity, hold, frozen
    parameters). Among those, runs whose whole ``[data]`` (workers and paths aside), ``[features]``
    and ``[model]`` equal the run's come first (then the newest); ``differences`` lists the keys
    that differ otherwise, for the report."""
    from training.config import with_defaults

    sound = ("synth", "sample_rate", "duration_s", "note", "velocity", "hold_s", "frozen")
    ignore = {"workers", "cache_dir", "shard_size"}
    mine = cfg.to_dict()
    found = []
    for d in run.parent.iterdir():
        if d.resolve() == run.resolve() or not (d / "config.json").is_file():
            continue
        try:
            other = json.loads((d / "config.json").read_text())
        except ValueError:
            continue
        if not isinstance(other, dict):
            continue
        other = with_defaults(other)  # keys added since that run was made: their defaults, as in cfg
        if other.get("loss", {}).get("schedule") != "param":
            continue
        if any(other.get("data", {}).get(k) != mine["data"].get(k) for k in sound):
            continue
        best = d / "checkpoints" / "best"
        if not (best.is_dir() and any(best.iterdir())):
            continue
        diffs = [f"{sec}.{k}" for sec in ("data", "features", "model") for k in mine[sec]
                 if k not in ignore and other.get(sec, {}).get(k) != mine[sec][k]]
        found.append((len(diffs) > 0, -os.path.getmtime(d / "config.json"), str(d), diffs))
    if not found:
        return None, []
    _, _, path, diffs = min(found)
    return Path(path), diffs


# ------------------------------------------------------------------------------ evaluation
@dataclass
class Method:
    presets: np.ndarray  # [N, n_params]
    seconds: float  # total wall time to produce all presets
    renders: float  # plugin renders used per target (scoring excluded)
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate(args: argparse.Namespace, say: Callable[[str], None] = print) -> tuple[dict[str, Any], list]:
    """Run the evaluation described by parsed ``args``; returns (result dict, report examples)."""
    from training.config import from_dict
    from training.cli import enable_compilation_cache

    cfg = from_dict(read_run_config(args.run))
    enable_compilation_cache()
    import jax

    from training.data import build_dataset, sample_presets, synth_of
    from training.evaluate_core import (load_predictor, logmel_embeddings, mean_preset, nearest_neighbour)
    from training.report import Example
    from training.cma import cma_search, renders_to_reach
    from training.refine import get_refiner, snapshot_steps
    from training.search import NoteRenderer, score_mss

    data = cfg.data
    sr = data.sample_rate
    t_start = time.perf_counter()
    predictor = load_predictor(args.run, getattr(args, "checkpoint", "best"))
    layout = predictor.layout
    methods: dict[str, Method] = {}
    notes: list[str] = []
    with NoteRenderer(data, args.workers, log=say) as renderer:
        targets = load_targets(args.targets, args.n, cfg, renderer, args.note, say)
        n = len(targets.names)
        notes += targets.notes_text
        if n < args.n:
            notes.append(f"{n} target(s) available of the {args.n} asked for")
        say(f"[eval] {n} {targets.kind} target(s); run {args.run}")

        def render_rows(normalized: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return renderer.render_at(normalized, targets.notes[rows])

        def mss_of(presets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            audio, ok = render_rows(presets, np.arange(len(presets)))
            return score_mss(audio, targets.audio, ok, sr), audio

        # -- model: hears each target at its own note when it was trained on it, else transposed to
        # the nearest note it was (training.targets.heard)
        predictor.outputs(targets.heard[:1], targets.heard_notes[:1])  # compile outside the timing
        t0 = time.perf_counter()
        outs = predictor.outputs(targets.heard, targets.heard_notes)
        pred = predictor.presets(outs)
        t_model = time.perf_counter() - t0
        methods["model"] = Method(pred, t_model, 0.0)
        t0 = time.perf_counter()
        pred_mss, _ = mss_of(pred)  # where refinement and search start (they pay for this render)
        t_start_render = time.perf_counter() - t0

        # -- model + refinement through the proxy
        has_proxy = synth_of(data).has_proxy
        for name in ("model+refine", "model+proxy_search", "model+proxy_refine") if not has_proxy else ():
            notes.append(f"{name}: not available ({synth_of(data).name} has no differentiable proxy)")
        if args.refine_steps > 0 and has_proxy:
            say(f"[eval] model+refine: {args.refine_steps} proxy steps per target (batches of {args.refine_batch})")
            best = pred.copy()
            best_mss = pred_mss.copy()
            t_ref = 0.0
            compile_s = 0.0
            curve_steps: tuple[int, ...] = ()
            curve_mss = curve_s = None  # best plugin distance so far [S, n] / seconds spent [S] per snapshot
            for note in np.unique(targets.notes):
                rows = np.flatnonzero(targets.notes == note)
                refiner = get_refiner(dataclasses.replace(data, note=int(note)), tuple(cfg.loss.fft_sizes),
                                      args.refine_batch)
                for a in range(0, len(rows), args.refine_batch):
                    r = rows[a:a + args.refine_batch]
                    res = refiner.refine(pred[r], targets.audio[r], args.refine_steps, args.snapshots, seed=args.seed,
                                         lr=args.refine_lr)
                    compile_s += res.compile_seconds
                    t0 = time.perf_counter()
                    n_snap = len(res.candidates) - 1
                    cands = res.candidates[1:].reshape(-1, pred.shape[1])  # [S*b, n_params], snapshot-major
                    rr = np.tile(r, n_snap)
                    audio, ok = render_rows(cands, rr)
                    d = score_mss(audio, targets.audio[rr], ok, sr)
                    t_render = time.perf_counter() - t0
                    for c, row, dist in zip(cands, rr, d):
                        if dist < best_mss[row]:
                            best_mss[row], best[row] = dist, c
                    t_ref += res.seconds + t_render
                    if curve_mss is None:
                        curve_steps = snapshot_steps(args.refine_steps, args.snapshots)
                        curve_mss, curve_s = np.tile(pred_mss, (len(curve_steps), 1)), np.zeros(len(curve_steps))
                    running = pred_mss[r].copy()
                    for j in range(1, len(curve_s)):  # a descent stopped early keeps its last snapshot
                        jj = min(j, n_snap)
                        if jj == j:
                            running = np.minimum(running, d[(j - 1) * len(r):j * len(r)])
                        curve_mss[j, r] = running
                        curve_s[j] += res.snapshot_seconds[jj] + jj * t_render / max(n_snap, 1)
            curve = {"steps": list(curve_steps),
                     "mean_mss": [_mean(np.where(np.isfinite(c), c, np.nan)) for c in curve_mss],
                     "seconds_per_target": [(t_model + t_start_render + c) / n for c in curve_s]}
            methods["model+refine"] = Method(best, t_model + t_start_render + t_ref, 1.0 + args.snapshots,
                                             {"compile_seconds": compile_s, "curve": curve})
            refine_level = best_mss
            notes.append(f"model+refine's wall time leaves out the one-off compilation of the proxy's gradient "
                         f"({compile_s:.0f} s here; once per machine, shape and proxy version, then cached)")

        # -- the run's training set: the mean preset and the nearest-neighbour gallery, whose
        # presets also join the model's candidates in the first proxy ranking (eval.lookup_candidates)
        dataset = near = None
        n_lookup = cfg.eval.lookup_candidates if has_proxy else 0
        if not args.no_dataset:
            say("[eval] loading the run's training set (for the mean preset and nearest neighbour)")
            dataset = build_dataset(data, progress=False, log=say, n_eval_factory=cfg.eval.n_factory)
            emb = logmel_embeddings(dataset.lookup.audio, sr)  # the training presets at data.note
            t0 = time.perf_counter()
            near = nearest_neighbour(emb, logmel_embeddings(targets.model_input, sr), k=max(n_lookup, 1))
            near = near.reshape(n, -1)  # [N, max(L, 1)], nearest first; targets at data.note too
            t_lookup = time.perf_counter() - t0
        elif n_lookup:
            notes.append("--no-dataset: no gallery presets in the first proxy ranking (eval.lookup_candidates)")

        # -- the model's candidates ranked by the proxy, then the proxy-guided search (proxy forward
        # renders only: no plugin, no gradient): the fit's own rows (evaluate_core.model_rows), per note
        rounds = cfg.eval.proxy_search_rounds if args.proxy_search_rounds is None else args.proxy_search_rounds
        refine_steps = cfg.eval.proxy_refine_steps if args.proxy_refine_steps is None else args.proxy_refine_steps
        if has_proxy and (rounds > 0 or cfg.eval.best_of_k > 0 or refine_steps > 0):
            from training.evaluate_core import model_rows

            run_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, proxy_search_rounds=rounds,
                                                                        proxy_refine_steps=refine_steps))
            row_predictor = dataclasses.replace(predictor, cfg=run_cfg)
            say(f"[eval] model+best_of_k ({run_cfg.eval.best_of_k} candidates), model+proxy_search ({rounds} rounds "
                f"of {cfg.eval.proxy_search_candidates} proxy renders) and model+proxy_refine ({refine_steps} proxy "
                "steps) per target")
            got: dict[str, np.ndarray] = {}
            spent: dict[str, float] = {}
            proxy_renders: dict[str, int] = {}
            for note in np.unique(targets.notes):
                rows = np.flatnonzero(targets.notes == note)
                lookup = dataset.lookup.normalized[near[rows, :n_lookup]] if near is not None and n_lookup else None
                out = model_rows(row_predictor, targets.audio[rows], None, args.seed, note=int(note), lookup=lookup,
                                 outputs=(jax.tree.map(lambda x: x[rows], outs), t_model * len(rows) / n))
                for name, row in out.items():
                    got.setdefault(name, pred.copy())[rows] = row.presets
                    spent[name] = spent.get(name, 0.0) + row.seconds_per_target * len(rows)
                    proxy_renders[name] = row.proxy_renders  # per target, the same at every note
            for name in ("model+best_of_k", "model+proxy_search", "model+proxy_refine"):
                if name in got:
                    extra = {"rounds": rounds, "refine_steps": refine_steps, "best_of_k": run_cfg.eval.best_of_k,
                             "lookup_candidates": n_lookup if near is not None else 0,
                             "proxy_renders_per_target": proxy_renders[name]}
                    methods[name] = Method(got[name], spent[name], 0.0, extra)

        # -- model + CMA-ES
        if args.search_renders > 0:
            say(f"[eval] model+search: CMA-ES, {args.search_renders} plugin renders per target")
            s = cma_search(render_rows, targets.audio, pred, layout, args.search_renders, sr, start_mss=pred_mss,
                           sigma0=0.1, seed=args.seed, log=say)
            methods["model+search"] = Method(s.best, t_model + t_start_render + s.seconds, 1.0 + float(s.renders.mean()))

        # -- baselines
        if dataset is not None:
            mean = mean_preset(layout, dataset.train.normalized)
        else:
            mean = np.asarray(layout.base_normalized, np.float64)
            notes.append("--no-dataset: the mean preset is the base preset; no nearest-neighbour baseline")
        methods["mean_preset"] = Method(np.tile(mean, (n, 1)), 0.0, 0.0)
        rng = np.random.default_rng([args.seed, 7])
        methods["random_preset"] = Method(sample_presets(synth_of(data), rng, n, frozen=dict(data.frozen)),
                                          0.0, 0.0)
        if near is not None:
            methods["nearest_neighbour"] = Method(dataset.lookup.normalized[near[:, 0]], t_lookup, 0.0)
        param_run, diffs = (args.param_run, []) if args.param_run else find_param_run(args.run, cfg)
        if diffs:
            notes.append(f"the parameter-loss-only run {param_run} differs from the run in: {', '.join(diffs)}")
        if cfg.loss.schedule == "param" and args.param_run is None:
            notes.append("the evaluated run is itself trained with the parameter loss only")
        elif param_run is not None:
            say(f"[eval] parameter-loss-only baseline: {param_run}")
            other = load_predictor(param_run, "best")
            if other.cfg.data.n_samples != data.n_samples or other.cfg.data.sample_rate != sr:
                raise _err("--param-run", f"a run with the same sample rate and length as {args.run}",
                           str(param_run), "train it with the same [data] settings")
            other.predict_normalized(targets.model_input[:1])
            t0 = time.perf_counter()
            p = other.predict_normalized(targets.model_input)
            methods["param_only"] = Method(p, time.perf_counter() - t0, 0.0, {"run": str(param_run)})
        else:
            notes.append("no parameter-loss-only run found beside the run (train one with "
                         "--set loss.schedule=param, or pass --param-run)")
        if args.cma_renders > 0:
            say(f"[eval] cma_mean: CMA-ES from the mean preset, {args.cma_renders} plugin renders per target")
            s = cma_search(render_rows, targets.audio, np.tile(mean, (n, 1)), layout, args.cma_renders, sr,
                           sigma0=0.25, seed=args.seed + 1, log=say)
            methods["cma_mean"] = Method(s.best, s.seconds, float(s.renders.mean()),
                                         {"history": s.history, "selection_mean_mss": _mean(s.best_mss)})

        # -- score every method on a fresh plugin render
        say("[eval] scoring every method on the plugin's re-render")
        scores: dict[str, dict[str, np.ndarray]] = {}
        ex_k = min(args.examples, n)
        examples = [Example(targets.names[k], sr, targets.audio[k]) for k in range(ex_k)]
        for name, m in methods.items():
            audio, ok = render_rows(m.presets, np.arange(n))
            scores[name] = score(audio, ok, targets, m.presets, layout, sr)
            for k in range(ex_k):
                if name in args.example_methods:
                    examples[k].renders[name] = audio[k]
                    examples[k].mss[name] = float(scores[name]["mss"][k])

        if renderer.restarts:
            notes.append(f"the plugin workers were restarted {renderer.restarts} time(s) after failed or non-finite "
                         f"renders; {len(renderer.culprits)} preset(s) failed even alone in fresh workers")
        culprits = [c.tolist() for c in renderer.culprits[:5]]
        if renderer.failures:
            from collections import Counter

            top = "; ".join(f"{c}x {r}" for r, c in Counter(renderer.failures).most_common(3))
            notes.append(f"{len(renderer.failures)} plugin render attempt(s) failed (each retried; a target whose "
                         f"render still failed is left out of that method's means): {top}")
    result = summarise(args, cfg, targets, methods, scores, notes, time.perf_counter() - t_start)
    if culprits:
        result["render_culprits"] = culprits  # normalized presets, for a bug report
    if "model+refine" in methods and "cma_mean" in methods:
        reach = [renders_to_reach(h, lvl) for h, lvl in zip(methods["cma_mean"].extra["history"], refine_level)]
        result["cma_mean_to_reach_model_refine"] = {
            "renders": [r for r, _ in reach], "seconds": [s for _, s in reach],
            "reached": int(sum(r is not None for r, _ in reach)), "of": n}
    try:
        result["bars"] = bars(result)
    except Exception as e:  # the measurements must survive a bug in the verdicts
        result["bars"] = [{"name": "bars", "passed": None, "detail": f"could not be computed: {type(e).__name__}: {e}"}]
    return result, examples


def _mean(x: np.ndarray) -> float | None:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def summarise(args: argparse.Namespace, cfg: Any, targets: TargetSet, methods: dict[str, Method],
              scores: dict[str, dict[str, np.ndarray]], notes: list[str], wall_s: float) -> dict[str, Any]:
    n = len(targets.names)
    out_methods = {}
    for name, m in methods.items():
        sc = scores[name]
        ok = np.isfinite(sc["mss"])
        desc = METHOD_DESCRIPTIONS[name]
        if name == "model+refine":
            desc += f" ({args.refine_steps} steps, {args.snapshots} snapshots)"
        elif name == "model+search":
            desc += f" ({args.search_renders} renders)"
        elif name == "cma_mean":
            desc += f" ({args.cma_renders} renders)"
        elif name == "model+proxy_search":
            desc += (f" ({m.extra['best_of_k']} + {m.extra['lookup_candidates']} gallery + {m.extra['rounds']} x "
                     f"{cfg.eval.proxy_search_candidates} proxy renders, compilation included)")
        elif name == "model+best_of_k":
            desc += f" ({m.extra['best_of_k']} proxy renders, compilation included)"
        elif name == "model+proxy_refine":
            desc += (f" ({m.extra['best_of_k']} + {m.extra['lookup_candidates']} gallery proxy renders + "
                     f"{m.extra['refine_steps'] + 1} with gradient, compilation excluded)")
        elif name == "param_only":
            desc += f" ({m.extra.get('run')})"
        out_methods[name] = {
            "description": desc,
            "metrics": {k: _mean(v) for k, v in sc.items()},
            "median_mss": float(np.median(sc["mss"][ok])) if ok.any() else None,
            "n_ok": int(ok.sum()), "n_failed": int((~ok).sum()),
            "seconds_per_target": m.seconds / max(n, 1),
            "renders_per_target": m.renders,
            **{k: m.extra[k] for k in ("compile_seconds", "curve", "selection_mean_mss", "proxy_renders_per_target")
               if k in m.extra},
        }
    per_target = []
    for k in range(n):
        per_target.append({"name": targets.names[k], "note": int(targets.notes[k]),
                           "mss": {name: _num(scores[name]["mss"][k]) for name in methods},
                           "metrics": {name: {mk: _num(v[k]) for mk, v in scores[name].items()} for name in methods}})
    in_domain = targets.normalized is not None
    return {
        "run": str(args.run),
        "targets": targets.kind if targets.kind in ("random", "factory") else f"folder {targets.kind}",
        "n": n,
        "description": (f"{n} {'in-domain' if in_domain else 'out-of-domain'} targets "
                        f"({targets.kind}), {cfg.data.duration_s} s at {cfg.data.sample_rate} Hz, "
                        f"note-off at {cfg.data.hold_s} s, velocity {cfg.data.velocity}."),
        "methods": out_methods,
        "per_target": per_target,
        "notes": notes,
        "settings": {"refine_steps": args.refine_steps, "refine_lr": args.refine_lr, "snapshots": args.snapshots,
                     "refine_batch": args.refine_batch, "search_renders": args.search_renders,
                     "cma_renders": args.cma_renders, "seed": args.seed, "workers": args.workers or cfg.data.workers,
                     "cpu_count": os.cpu_count(), "wall_seconds": round(wall_s, 1),
                     "model": f"{cfg.model.kind} on {cfg.features.kind}, loss {cfg.loss.schedule}"},
    }


def _f4(x: Any) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def bars(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's bars, measured on this result (``passed`` None when a method is missing)."""
    m = result["methods"]
    out = []
    ref = m.get("model+refine")
    baselines = [b for b in ("mean_preset", "random_preset", "nearest_neighbour", "param_only", "cma_mean") if b in m]
    if ref is None:
        out.append({"name": "model+refine beats every baseline on MSS", "passed": None,
                    "detail": "model+refine was not run (--refine-steps 0)"})
        out.append({"name": "model+refine reaches CMA-ES quality in <= 1/10 of its wall time", "passed": None,
                    "detail": "model+refine was not run"})
        return out
    r = ref["metrics"]["mss"]
    wins, passed = [], bool(baselines)
    for b in baselines:
        pairs = [(t["mss"]["model+refine"], t["mss"][b]) for t in result["per_target"]
                 if t["mss"].get(b) is not None and t["mss"].get("model+refine") is not None]
        if not pairs:
            wins.append(f"{b}: no target scored by both")
            passed = False
            continue
        mr, mb = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
        k = sum(p[0] < p[1] for p in pairs)
        wins.append(f"{b} {mb:.4f} vs {mr:.4f} (refine better on {k}/{len(pairs)} targets)")
        passed = passed and bool(mr < mb)
    out.append({"name": f"model+refine beats every baseline on MSS ({result['targets']})",
                "passed": passed if baselines else None,
                "detail": "mean MSS over the targets both methods scored, baseline vs model+refine: " + "; ".join(wins)})
    c = m.get("cma_mean")
    if c is None:
        out.append({"name": "model+refine reaches CMA-ES quality in <= 1/10 of its wall time", "passed": None,
                    "detail": "cma_mean was not run (--cma-renders 0)"})
    else:
        t_r, t_c = ref["seconds_per_target"], c["seconds_per_target"]
        level = c.get("selection_mean_mss")
        curve = ref.get("curve", {})
        reached = [(k, t) for k, (v, t) in enumerate(zip(curve.get("mean_mss", []), curve.get("seconds_per_target", [])))
                   if v is not None and level is not None and v <= level]
        reach = result.get("cma_mean_to_reach_model_refine", {})
        if reached:
            k, t = reached[0]
            steps = curve["steps"][k]
            passed = bool(t <= 0.1 * t_c)
            how = (f"model+refine reached CMA-ES's mean MSS {level:.4f} after {steps} proxy step(s) in {t:.2f} s per "
                   f"target vs CMA-ES's {t_c:.2f} s (ratio {t / max(t_c, 1e-9):.3f}, bar 0.1)")
        else:
            passed = False
            how = f"model+refine never reached CMA-ES's mean MSS {level if level is not None else float('nan'):.4f}"
        out.append({"name": f"model+refine reaches the quality of CMA-ES with {c['renders_per_target']:.0f} plugin "
                            "renders in at most a tenth of its wall time",
                    "passed": passed,
                    "detail": f"{how}. After all {result['settings']['refine_steps']} steps: MSS {_f4(r)} vs CMA-ES "
                              f"{_f4(c['metrics']['mss'])}, {t_r:.2f} s vs {t_c:.2f} s per target (ratio "
                              f"{t_r / max(t_c, 1e-9):.3f}); CMA-ES reached model+refine's final per-target distance "
                              f"on {reach.get('reached', '?')}/{reach.get('of', '?')} targets"})
    return out


# ------------------------------------------------------------------------------ CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="trained run directory (runs/<name>)")
    p.add_argument("--targets", required=True, help="random | factory | a folder of audio files")
    p.add_argument("--n", default="16", help="number of targets (default 16)")
    p.add_argument("--json", default=None, help="result file (default runs/<name>/eval/<targets>-n<N>.json); "
                                                 ".md and .html are written beside it")
    p.add_argument("--refine-steps", default="30", help="proxy refinement steps (0 skips; default 30)")
    p.add_argument("--refine-lr", default="0.3", help="Adam learning rate of the refinement (default 0.3)")
    p.add_argument("--refine-batch", default="16",
                   help="targets refined together (one compiled shape; on CPU 16 at once cost ~4x one; default 16)")
    p.add_argument("--snapshots", default="10", help="refinement snapshots re-rendered by the plugin (default 10)")
    p.add_argument("--proxy-search-rounds", default=None,
                   help="rounds of model+proxy_search (0 skips; default: the run's eval.proxy_search_rounds)")
    p.add_argument("--proxy-refine-steps", default=None,
                   help="gradient steps of model+proxy_refine (0 skips; default: the run's eval.proxy_refine_steps)")
    p.add_argument("--search-renders", default="100", help="CMA-ES renders after the model (0 skips; default 100)")
    p.add_argument("--cma-renders", default="500", help="CMA-ES-from-mean baseline renders (0 skips; default 500)")
    p.add_argument("--param-run", default=None, help="parameter-loss-only run (default: found beside --run)")
    p.add_argument("--note", default="auto", help="folder targets: auto (pYIN per file) or a MIDI note")
    p.add_argument("--examples", default="3", help="targets shown with spectrograms and audio (default 3)")
    p.add_argument("--workers", default=None, help="plugin render processes (default: the run's data.workers)")
    p.add_argument("--seed", default="0")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"), help="which checkpoint (best)")
    p.add_argument("--no-dataset", action="store_true",
                   help="do not load the training set (no nearest neighbour; mean preset = base preset)")
    a = p.parse_args(argv)
    a.run = check_run_dir(a.run, a.checkpoint)
    if a.targets not in ("random", "factory"):
        d = Path(a.targets)
        if not d.is_dir():
            raise _err("--targets", "random, factory, or an existing folder of audio files", repr(a.targets),
                       "check the spelling or the path")
        try:
            has_audio = any(f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES for f in d.iterdir())
        except OSError as e:
            raise _err("--targets", "a readable folder of audio files", f"{a.targets!r} ({e.strerror or e})",
                       "fix the folder's permissions") from None
        if not has_audio:
            raise _err("--targets", f"a folder holding audio files ({', '.join(AUDIO_SUFFIXES)})",
                       f"{a.targets!r} with none", "point it at a folder of wav/flac/ogg files")
    a.n = _int_option("--n", a.n, 1, 100000, "e.g. --n 16")
    a.refine_steps = _int_option("--refine-steps", a.refine_steps, 0, None, "0 skips refinement")
    _at_most("--refine-steps", a.refine_steps, MAX_REFINE_STEPS, "steps per target (a typo costs hours)", "try 30")
    a.refine_batch = _int_option("--refine-batch", a.refine_batch, 1, 1024, "e.g. 1 or 8")
    a.snapshots = _int_option("--snapshots", a.snapshots, 1, 64, "try 4")
    a.search_renders = _int_option("--search-renders", a.search_renders, 0, None, "0 skips the search")
    _at_most("--search-renders", a.search_renders, MAX_SEARCH_RENDERS,
             "plugin renders per target (a typo costs hours)", "try 100")
    if a.proxy_search_rounds is not None:
        a.proxy_search_rounds = _int_option("--proxy-search-rounds", a.proxy_search_rounds, 0, 64, "0 skips it")
    if a.proxy_refine_steps is not None:
        a.proxy_refine_steps = _int_option("--proxy-refine-steps", a.proxy_refine_steps, 0, 4096, "0 skips it")
    a.cma_renders = _int_option("--cma-renders", a.cma_renders, 0, None, "0 skips the CMA-ES baseline")
    _at_most("--cma-renders", a.cma_renders, MAX_CMA_RENDERS, "plugin renders per target (a typo costs hours)",
             "try 500")
    a.examples = _int_option("--examples", a.examples, 0, 1000, "e.g. 3")
    a.seed = _int_option("--seed", a.seed, 0, None, "any integer >= 0")
    a.workers = None if a.workers is None else _int_option("--workers", a.workers, 1, 256, "try 2")
    try:
        a.refine_lr = float(a.refine_lr)
    except ValueError:
        a.refine_lr = float("nan")
    if not (math.isfinite(a.refine_lr) and 0 < a.refine_lr <= 10):
        raise _err("--refine-lr", "a learning rate in (0, 10]", repr(a.refine_lr), "try 0.3")
    if str(a.note).lower() != "auto":
        a.note = _int_option("--note", a.note, 0, 127, "a MIDI note or auto")
    else:
        a.note = "auto"
    if a.param_run is not None:
        a.param_run = check_run_dir(a.param_run, flag="--param-run")
    a.example_methods = ("model", "model+refine", "model+search", "nearest_neighbour", "param_only", "cma_mean")
    if a.json is None:
        tag = a.targets if a.targets in ("random", "factory") else Path(a.targets).name or "dir"
        a.json = a.run / "eval" / f"{tag}-n{a.n}.json"
    a.json = Path(a.json)
    if a.json.suffix.lower() != ".json":
        raise _err("--json", "a file name ending in .json", repr(str(a.json)), f"e.g. --json {a.json.with_suffix('.json')}")
    output_path(a.json, "--json", create_parents=True, suffixes=(".md", ".html"))
    if a.examples:
        output_path(a.json.with_name(f"{a.json.stem}-example-{a.examples - 1}.png"), "--json (its example figures)",
                    create_parents=True)
    return a


def write_reports(result: dict[str, Any], examples: list, json_path: Path) -> dict[str, str]:
    """OUT.json (strict JSON: non-finite figures as null), OUT.md (+ example PNGs) and OUT.html,
    written as one set: all to temporaries, then renamed; a failure on the way leaves the
    previous reports as they were. Returns their paths."""
    from training.report import html_report, markdown, spectrogram_png

    md, html = json_path.with_suffix(".md"), json_path.with_suffix(".html")
    with OutputSet() as outs:
        outs.write_json(json_path, result)
        figures = {}
        for k, ex in enumerate(examples):
            png = json_path.with_name(f"{json_path.stem}-example-{k}.png")
            rows = [("target", ex.target)] + [(f"{m} (MSS {ex.mss.get(m, float('nan')):.3f})", a)
                                              for m, a in ex.renders.items()]
            outs.write_bytes(png, spectrogram_png(rows, ex.sample_rate, title=ex.name))
            figures[f"{k + 1}. {ex.name}"] = png.name
        outs.write_text(md, markdown(result, figures))
        outs.write_text(html, html_report(result, examples, 3))
    return {"json": str(json_path), "markdown": str(md), "html": str(html)}


def format_summary(result: dict[str, Any]) -> str:
    from training.report import method_rows

    header, rows, _ = method_rows(result)
    widths = [max(len(str(r[j])) for r in [header] + rows) for j in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    for b in result.get("bars", []):
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[b["passed"]]
        lines.append(f"[{verdict}] {b['name']}: {b['detail']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Bad input: one message, exit status 2, nothing written; the reports are written as a set."""
    def body() -> int:
        args = parse_args(argv)
        result, examples = evaluate(args)
        paths = write_reports(result, examples, args.json)
        print(format_summary(result))
        print("wrote: " + ", ".join(paths.values()))
        return 0

    return run_cli("python -m training.evaluate", body, argv)


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
