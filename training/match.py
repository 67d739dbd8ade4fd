"""Match a sound (or a folder of sounds) with a preset for a real synth.

    python -m training.match SOUND.wav --synth amsynth --out PATCH.amSynth          # the shipped model
    python -m training.match SOUND.wav --run runs/amsynth --out PATCH.amSynth       # a model you trained
    python -m training.match SOUNDS/ --synth amsynth --out OUTDIR/                  # every sound in a folder
        [--quality fast|default|best] [--note auto|MIDI] [--hold SECONDS] [--refine-steps N]
        [--search-renders M] [--max-seconds S]

1. Reads the target (wav / flac / ogg / aiff / mp3: whatever libsndfile decodes), keeps its own
   sample rate (16-48 kHz; others are resampled to the nearest bound) and **the whole sound**, up to
   where it falls below -60 dB re peak (at most ``--max-seconds``, 10 s; said when applied); finds
   the note (pYIN; ``--note``) and when it was released (from the envelope; ``--hold``).
2. The encoder hears the first second at its training rate and is told the note; it answers
   with its many candidate presets (``training.heads``), and the synth's own human presets
   nearest to the sound join them (the factory corpus rendered once per note and cached:
   ``training.corpus``).
3. Every candidate is rendered through the differentiable proxy over the whole sound and ranked
   by its distance to the target; the best-ranked ones are rendered through the **real synth**.
4. Gradient descent through the proxy refines the real synth's best candidate; its snapshots are
   rendered through the real synth, and the one nearest to the target is kept (``--quality best``
   then runs CMA-ES through the real synth). Candidates more than ``QUIET_DB`` quieter than the
   target are never kept.

``--quality`` (see :data:`QUALITIES`): ``fast`` (model candidates ranked by the proxy, one plugin
render: the written preset's), ``default`` (all of the above), ``best`` (more candidates, longer
refinement, CMA-ES). It writes

   ``PATCH.amSynth``  the preset (plus the synth's companion files, e.g. PATCH.fxp)
   ``PATCH.wav``      the real synth's render of the written preset over the whole sound
   ``PATCH.png``      log-mel spectrograms: target / proxy / real synth
   ``PATCH.json``     every stage's distance, renders and seconds; what was done to the target

Distances: ``mss`` (multi-resolution STFT, FFT 64..2048, linear + log magnitude), log-mel L1
(dB), MFCC L1, against the target over the judged length at its rate. A folder gets one preset
per sound under OUTDIR (same sub-folders) and ``OUTDIR/index.html`` (players, spectrograms);
rerunning the command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from proxies.files import OutputSet
from training.cli import (_at_most, _err, _int_option, check_run_dir, enable_compilation_cache, output_path,
                          read_run_config, run_cli)
from training.targets import MAX_JUDGE_S, Target, prepare_whole_target

#: no candidate whose real render is more than this many dB (RMS) quieter than the target is kept:
#: the distance alone prefers silence to a wrong sound for short sounds
QUIET_DB = 20.0
#: upper bounds: a typo must not cost days (each search render is a plugin render; each refinement
#: step a proxy gradient)
MAX_REFINE_STEPS = 10_000
MAX_SEARCH_RENDERS = 20_000
#: what is written beside the preset (besides the synth's companion files)
COMPANIONS = (".wav", ".png", ".json")


class Quality(NamedTuple):
    """What a ``--quality`` level spends per sound."""

    candidates: int  # the model's candidate presets
    corpus: int  # nearest human presets of the synth's corpus added to them
    refine_steps: int  # gradient steps through the proxy from the best-ranked candidate
    snapshots: int  # refinement snapshots rendered by the real synth
    plugin_picks: int  # best-ranked candidates rendered by the real synth
    search_renders: int  # CMA-ES renders through the real synth at the end


QUALITIES = {
    "fast": Quality(candidates=16, corpus=0, refine_steps=0, snapshots=0, plugin_picks=1, search_renders=0),
    "default": Quality(candidates=16, corpus=48, refine_steps=30, snapshots=4, plugin_picks=16, search_renders=0),
    "best": Quality(candidates=32, corpus=96, refine_steps=80, snapshots=6, plugin_picks=32, search_renders=300),
}


@dataclass(frozen=True)
class Options:
    target: Path
    run: Path | None
    out: Path
    note: int | str
    refine_steps: int
    search_renders: int
    refine_lr: float
    snapshots: int
    workers: int | None
    seed: int
    name: str
    which: str
    preset_files: list[str] = field(default_factory=list)  # what the synth's preset writer wrote
    synth: str = ""  # the shipped model of this synth (when run is None)
    quality: str = "default"
    hold: float | None = None
    max_seconds: float = MAX_JUDGE_S

    @property
    def plan(self) -> Quality:
        return QUALITIES[self.quality]._replace(refine_steps=self.refine_steps, search_renders=self.search_renders,
                                                snapshots=min(self.snapshots, max(self.refine_steps, 0)))


def model_config(opts: Options) -> dict:
    """The config (as dicts) of the model ``opts`` names: a run's config.json or the shipped
    model's (no JAX)."""
    if opts.run is not None:
        return read_run_config(opts.run)
    from training.shipped import CONFIG, read_manifest, shipped_dir

    read_manifest(opts.synth)
    return json.loads((shipped_dir(opts.synth) / CONFIG).read_text())


def _synth_of_config(config: dict):
    """The synth a model config (as dicts) was trained on (no JAX)."""
    from proxies.synth import get_synth

    data = config.get("data", {})
    return get_synth(data.get("synth", "amsynth"), data.get("spec") or None)


def options_synth(opts: Options):
    """The synth of the model ``opts`` names (no JAX; reads its config: call it once per run)."""
    return _synth_of_config(model_config(opts))


def load_model(opts: Options):
    """The :class:`training.evaluate_core.Predictor` of a run or of the shipped model."""
    if opts.run is not None:
        from training.evaluate_core import load_predictor

        return load_predictor(opts.run, opts.which)
    from training import shipped

    return shipped.load(opts.synth)


def _float_option(flag: str, text: Any, lo: float, hi: float, fix: str, what: str = "a number") -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and lo < value <= hi):
        raise _err(flag, f"{what} in ({lo:g}, {hi:g}]", repr(text), fix)
    return value


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Parse and check every option and the target's path before any heavy work."""
    from training.shipped import ShippedModelError, available

    p = argparse.ArgumentParser(prog="python -m training.match", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="audio file to match (wav, flac, ogg, aiff, mp3; any rate, mono or stereo), "
                                  "or a folder of them")
    p.add_argument("--synth", default=None, help=f"use the shipped model of this synth (shipped: "
                                                 f"{', '.join(available()) or 'none'})")
    p.add_argument("--run", default=None, help="use a trained run directory (runs/<name>) instead")
    p.add_argument("--out", required=True, help="preset to write, PATCH.amSynth (.fxp/.wav/.png/.json beside it); "
                                                "for a folder of sounds, the output folder")
    p.add_argument("--quality", default="default", choices=tuple(QUALITIES),
                   help="fast: model + proxy ranking, one real render; default: + human presets, refinement, "
                        "a few real renders; best: + CMA-ES through the real synth (default: default)")
    p.add_argument("--note", default="auto", help="MIDI note 0..127 the sound plays, or auto (pYIN; default)")
    p.add_argument("--hold", default=None, help="seconds until the note is released (default: from the envelope)")
    p.add_argument("--max-seconds", default=str(MAX_JUDGE_S), help=f"judge at most this much of the sound "
                                                                    f"(default {MAX_JUDGE_S:g})")
    p.add_argument("--refine-steps", default=None, help="gradient steps through the proxy (default: the quality's)")
    p.add_argument("--search-renders", default=None, help="CMA-ES real-synth renders at the end (default: the "
                                                          "quality's)")
    p.add_argument("--refine-lr", default="0.3", help="Adam learning rate of the refinement (default 0.3)")
    p.add_argument("--snapshots", default=None, help="refinement snapshots rendered by the real synth "
                                                     "(default: the quality's)")
    p.add_argument("--workers", default=None, help="plugin render processes (default: the model's data.workers)")
    p.add_argument("--seed", default="0", help="seed of the candidates, the search and the proxy's noise (default 0)")
    p.add_argument("--name", default=None, help="preset name (default: the target file's name)")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"), help="which checkpoint of --run")
    a = p.parse_args(argv)

    target = Path(a.target)
    if not target.exists():
        raise _err("TARGET", "an audio file or a folder of them", f"{a.target!r}, which does not exist",
                   "check the path")
    if a.run is not None and a.synth is not None:
        raise _err("--run/--synth", "one of them (a trained run, or the shipped model of a synth)",
                   f"--run {a.run} and --synth {a.synth}", "drop one")
    if a.run is None and a.synth is None:
        raise _err("--synth", "the synth to match with (its shipped model), or --run runs/<name>", "neither",
                   f"e.g. --synth {(available() or ['amsynth'])[0]}")
    run = check_run_dir(a.run, a.checkpoint) if a.run is not None else None
    if run is not None:
        config = read_run_config(run)
        try:
            synth = _synth_of_config(config)
        except Exception as e:  # noqa: BLE001  (a synth this install cannot load: SynthNotFoundError and kin)
            data = config.get("data", {})
            named = f"data.synth = {data.get('synth', 'amsynth')!r}" + \
                (f" (data.spec = {data['spec']!r})" if data.get("spec") else "")
            raise _err("--run", "a run trained on a synth this install can load",
                       f"{named} in {run / 'config.json'} ({e})",
                       "install that synth (a vst: synth needs its plugin and probed spec: python -m proxies.probe), "
                       "or pass --run with a run trained on a registered synth") from None
    else:
        probe = Options(target, None, Path(a.out), "auto", 0, 0, 0.3, 1, None, 0, "x", a.checkpoint, synth=a.synth)
        try:
            synth = options_synth(probe)
        except ShippedModelError as e:
            raise _err("--synth", "a synth with a shipped model", repr(a.synth), str(e)) from None
        except Exception as e:  # noqa: BLE001  (an unknown synth name: SynthNotFoundError and kin)
            raise _err("--synth", "a registered synth with a shipped model", repr(a.synth), str(e)) from None
    suffix = synth.presets.write_suffix
    out = Path(a.out)
    if target.is_dir():
        if out.suffix.lower() == suffix.lower() or out.is_file():
            raise _err("--out", "an output folder for a folder of sounds", repr(a.out),
                       f"e.g. --out {out.with_suffix('')}-presets/")
        output_path(out / "index.html", "--out", create_parents=True)
    else:
        output_path(out, "--out", create_parents=True, suffixes=(".fxp",) + COMPANIONS)  # before any work
        if out.suffix.lower() != suffix.lower():
            raise _err("--out", f"a file name ending in {suffix} ({synth.name}'s preset file)", repr(a.out),
                       f"e.g. --out {out.with_suffix(suffix)}")
        if out.is_dir():
            raise _err("--out", "a file name", f"{a.out!r}, a directory", f"e.g. --out {out / ('patch' + suffix)}")
    note: int | str
    if str(a.note).strip().lower() == "auto":
        note = "auto"
    else:
        note = _int_option("--note", a.note, 0, 127, "give a MIDI note number (60 = middle C) or auto")
    q = QUALITIES[a.quality]
    has_proxy = synth.proxy is not None
    steps = q.refine_steps if (a.refine_steps is None) else \
        _int_option("--refine-steps", a.refine_steps, 0, None, "0 skips refinement; try 30..200")
    _at_most("--refine-steps", steps, MAX_REFINE_STEPS, "steps (each is a proxy gradient; a typo costs hours)",
             "try 30..200")
    if not has_proxy:
        if a.refine_steps is not None and steps > 0:
            raise _err("--refine-steps", f"0 for {synth.name}, which has no differentiable proxy (refinement "
                       "descends through one)", str(steps), "drop --refine-steps; --search-renders N searches "
                       "through the real engine instead")
        steps = 0
    renders = q.search_renders if a.search_renders is None else \
        _int_option("--search-renders", a.search_renders, 0, None, "0 skips the search; try 100..500")
    _at_most("--search-renders", renders, MAX_SEARCH_RENDERS, "plugin renders (a typo costs hours)", "try 100..500")
    snapshots = q.snapshots if a.snapshots is None else _int_option("--snapshots", a.snapshots, 1, 64, "try 4")
    seed = _int_option("--seed", a.seed, 0, None, "any integer >= 0")
    workers = None if a.workers is None else _int_option("--workers", a.workers, 1, 256, "try 2")
    lr = _float_option("--refine-lr", a.refine_lr, 0.0, 10.0, "try 0.3", "a learning rate")
    hold = None if a.hold is None else _float_option("--hold", a.hold, 0.0, 600.0, "give seconds, e.g. --hold 1.5")
    max_s = _float_option("--max-seconds", a.max_seconds, 0.0, 60.0, "e.g. --max-seconds 10")
    name = a.name if a.name is not None else out.stem
    if not name.strip() or any(c in name for c in "\n\r\0"):
        raise _err("--name", "a one-line, non-empty preset name", repr(name), "pass --name 'My patch'")
    return Options(target, run, out, note, steps, renders, lr, snapshots, workers, seed, name, a.checkpoint,
                   synth=synth.name if run is None else "", quality=a.quality, hold=hold, max_seconds=max_s)


# ------------------------------------------------------------------------------ matching
@dataclass
class Stage:
    """One stage's kept candidate: its preset, real render and distances."""

    name: str
    normalized: np.ndarray  # [n_params]
    audio: np.ndarray  # [C, T] real render
    metrics: dict[str, float]
    renders: int  # real-synth renders this stage used
    seconds: float  # wall time of the stage (compilation excluded)
    improved: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MatchResult:
    target: Target
    stages: list[Stage]
    final: Stage
    proxy_audio: np.ndarray | None
    sample_rate: int
    timing: dict[str, float]
    synth: Any = None  # the synth matched with (None: the one ``opts`` names)


def _metrics(audio: np.ndarray, target: np.ndarray, sample_rate: int) -> dict[str, float]:
    return _metrics_many(audio[None], target, sample_rate)[0]


def _metrics_many(audio: np.ndarray, target: np.ndarray, sample_rate: int) -> list[dict[str, float]]:
    """The distances of each of ``audio`` [N, C, T] to one ``target`` [C, T], 4 at a time (one
    compiled shape per judged length, small enough for a few candidates)."""
    from training.evaluate_core import audio_metrics

    m = audio_metrics(audio, np.broadcast_to(target, audio.shape), sample_rate, batch_size=4)
    return [{k: float(v[i]) for k, v in m.items()} for i in range(len(audio))]


def cache_root() -> Path:
    """Where matching caches what it renders once (the corpus at each note): ``$SYNTHPROG_CACHE``,
    default ``~/.cache/synthprog``."""
    return Path(os.environ.get("SYNTHPROG_CACHE") or Path.home() / ".cache" / "synthprog")


def _candidates(opts: Options, synth: Any, predictor: Any, target: Target, plan: Quality,
                say: Callable[[str], None], timing: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    """(candidates [K, n_params], where each came from); row 0 is the model's one preset."""
    data = predictor.cfg.data
    t0 = time.perf_counter()
    outs = predictor.outputs(target.model_input[None], target.model_note, data.velocity)
    cands = predictor.candidates(outs, max(plan.candidates, 1), opts.seed)[0]
    timing["model_s"] = time.perf_counter() - t0
    sources = ["model"] + [f"model candidate {i}" for i in range(1, len(cands))]
    if plan.corpus > 0 and synth.presets.corpus is not None:
        from training.corpus import best_in_corpus_by_mss, corpus_renders

        t0 = time.perf_counter()
        corpus = corpus_renders(synth.name, target.model_note, data.velocity, data.sample_rate, data.duration_s,
                                data.hold_s, cache_dir=str(cache_root() / "corpus"),
                                workers=opts.workers or data.workers, progress=True, log=say)
        # the human presets whose cached render (the model's window, at the note) is nearest by the judged distance
        _, mss = best_in_corpus_by_mss(corpus, target.model_input, data.sample_rate)
        idx = np.argsort(np.where(np.isfinite(mss), mss, np.inf), kind="stable")[:plan.corpus]
        cands = np.concatenate([cands, corpus.normalized[idx]])
        sources += [f"human preset {corpus.names[i]!r}" for i in idx]
        timing["corpus_s"] = time.perf_counter() - t0
    return cands, sources


def run_match(opts: Options, say: Callable[[str], None] = print, predictor: Any = None,
              outs: OutputSet | None = None, synth: Any = None) -> MatchResult:
    """Everything after the option checks for one sound. The preset files go into ``outs``
    (committed with the other outputs; without one they are written at once). ``predictor`` and
    ``synth``: the model's and its synth, when the caller has them (a folder: loaded once)."""
    from training.config import from_dict

    t_all = time.perf_counter()
    cfg = predictor.cfg if predictor is not None else from_dict(model_config(opts))
    data = cfg.data
    target = prepare_whole_target(opts.target, data, opts.note, opts.hold, say, opts.max_seconds,
                                  data.note_range)  # bad audio fails here, before JAX loads
    t_target = time.perf_counter() - t_all
    judge = dataclasses.replace(data, sample_rate=target.sample_rate, duration_s=target.duration_s,
                                hold_s=target.hold_s, note=target.note, note_range=(), velocity_range=())
    plan = opts.plan
    if synth is None:
        from proxies.synth import get_synth

        synth = get_synth(data.synth, data.spec or None)
    has_proxy = synth.proxy is not None
    timing: dict[str, float] = {"target_s": t_target}
    t0 = time.perf_counter()
    enable_compilation_cache()
    if predictor is None:
        say("loading the model")
        predictor = load_model(opts)
    timing["load_s"] = time.perf_counter() - t0
    from training.cma import cma_search
    from training.search import NoteRenderer, rms_db

    sr = target.sample_rate
    cands, sources = _candidates(opts, synth, predictor, target, plan, say, timing)
    stages: list[Stage] = []
    floor_db = float(rms_db(target.audio[None])[0]) - QUIET_DB  # quieter candidates are not kept

    # -- rank every candidate through the proxy over the whole sound
    order = np.arange(len(cands))
    proxy_d = np.full(len(cands), np.nan)
    refiner = None
    if has_proxy:
        from training.proxy_search import best_of_k

        say(f"ranking {len(cands)} candidates through the proxy over {target.duration_s:g} s at {sr} Hz "
            "(a new length or rate compiles the proxy once: ~20-60 s, then cached)")
        t0 = time.perf_counter()
        ranked = best_of_k(judge, cands[None], target.audio[None], seed=opts.seed, batch_size=16)
        proxy_d = ranked.distances[0]
        order = np.argsort(proxy_d, kind="stable")
        timing["rank_s"] = time.perf_counter() - t0

    # -- the real synth judges the best few
    picks = list(dict.fromkeys(int(i) for i in order[:max(plan.plugin_picks, 1)]))
    fast = opts.quality == "fast" and plan.refine_steps == 0 and plan.search_renders == 0
    t0 = time.perf_counter()
    with NoteRenderer(judge, opts.workers, log=say) as renderer:
        timing["engine_start_s"] = time.perf_counter() - t0

        def render(normalized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return renderer.render_at(normalized, [target.note] * len(normalized))

        if fast:  # one real render: the written preset's
            final = _final_stage(opts, synth, render, cands[order[0]], target, floor_db, outs, say)
            stages.append(Stage("best_of_k", final.normalized, final.audio, dict(final.metrics), 1,
                                timing.get("rank_s", 0.0), True,
                                {"candidates": len(cands), "proxy_distances": proxy_d.tolist(), "sources": sources,
                                 "picked": sources[int(order[0])], "judged_by": "proxy"}))
            timing["total_s"] = time.perf_counter() - t_all
            return MatchResult(target, stages, final, None, sr, timing, synth)
        rows = list(dict.fromkeys([0] + picks))  # the model's one preset: what the later stages bought
        t0 = time.perf_counter()
        batch = cands[rows]
        say(f"rendering the {len(batch)} best-ranked candidate(s) through the real {synth.name} over the whole sound")
        audio, ok = render(batch)
        t_render = time.perf_counter() - t0
        if not ok.any():
            raise RuntimeError("the real synth failed to render every candidate twice; see the worker log above "
                               "(a plugin crash, not a problem with the target)")
        loud = rms_db(audio) >= floor_db
        scores = [(m if k else None) for m, k in zip(_metrics_many(audio, target.audio, sr), ok)]

        def add(more: np.ndarray) -> list[int]:
            """Render ``more`` presets too; their rows in ``batch``."""
            nonlocal batch, audio, ok, loud
            a2, ok2 = render(more)
            rows_ = list(range(len(batch), len(batch) + len(more)))
            batch, audio, ok = np.concatenate([batch, more]), np.concatenate([audio, a2]), np.concatenate([ok, ok2])
            loud = np.concatenate([loud, rms_db(a2) >= floor_db])
            scores.extend(m if k else None for m, k in zip(_metrics_many(a2, target.audio, sr), ok2))
            return rows_

        def score_of(j: int) -> float:
            return scores[j]["mss"] if scores[j] is not None and loud[j] else math.inf

        best_j: int | None = None

        def stage(name: str, js: list[int], renders: int, seconds: float, extra: dict[str, Any]) -> None:
            nonlocal best_j
            if not js:
                return
            j = min(js, key=score_of)
            improved = best_j is None or score_of(j) < score_of(best_j)
            if improved:
                best_j = j
            k = best_j
            metrics = dict(scores[k]) if scores[k] is not None else {"mss": math.inf}
            stages.append(Stage(name, batch[k], audio[k], metrics, renders, seconds, improved,
                                {**extra, "candidate_mss": scores[j]["mss"] if scores[j] else None,
                                 "judged_by": "real synth"}))

        stage("model", [0], 1, timing.get("model_s", 0.0), {"source": sources[0], "proxy_distance": float(proxy_d[0])})
        pick_js = [rows.index(i) for i in picks]
        stage("best_of_k", pick_js, len(picks), timing.get("rank_s", 0.0) + timing.get("corpus_s", 0.0),
              {"candidates": len(cands), "proxy_distances": proxy_d.tolist(), "sources": sources,
               "picked": sources[rows[min(pick_js, key=score_of)]] if pick_js else None,
               "ranked_first": sources[int(order[0])]})
        # -- gradient refinement through the proxy, from the real synth's best so far
        if has_proxy and plan.refine_steps > 0:
            from training.refine import get_refiner

            say(f"refining the real synth's best candidate through the proxy: {plan.refine_steps} gradient steps (a "
                "new length or rate compiles the gradient once: 1-3 min, then cached)")
            refiner = get_refiner(judge, tuple(cfg.loss.fft_sizes), 1)
            res = refiner.refine(batch[best_j][None], target.audio[None], plan.refine_steps, plan.snapshots,
                                 seed=opts.seed, lr=opts.refine_lr)
            timing["refine_s"], timing["refine_compile_s"] = res.seconds, res.compile_seconds
            t0 = time.perf_counter()
            snap_js = add(res.candidates[1:, 0])
            t_render += time.perf_counter() - t0
            stage("refine", snap_js, len(snap_js), res.seconds,
                  {"snapshot_steps": list(res.steps), "proxy_distance": res.proxy_distance[:, 0].tolist(),
                   "plugin_mss": [scores[j]["mss"] if scores[j] else None for j in snap_js]})
        timing["plugin_s"] = t_render
        quiet = int((ok & ~loud).sum())
        if quiet:
            say(f"{quiet} of {len(batch)} candidate(s) rendered more than {QUIET_DB:.0f} dB quieter than the target "
                "and were not kept (the distance alone would prefer silence)")
        best = stages[-1]
        best_score = best.metrics["mss"] if math.isfinite(score_of(best_j)) else math.inf

        # -- CMA-ES through the real synth
        if plan.search_renders > 0:
            say(f"searching with CMA-ES through the real {synth.name}: {plan.search_renders} renders")
            sres = cma_search(lambda n, rows_: render(n), target.audio[None], best.normalized[None],
                              predictor.layout, plan.search_renders, sr, start_mss=np.array([best_score]),
                              sigma0=0.1, seed=opts.seed, min_level_db=floor_db)
            improved = bool(sres.best_mss[0] < best_score)
            if improved:
                a2, _ = render(sres.best)
                st = Stage("search", sres.best[0], a2[0], _metrics(a2[0], target.audio, sr), int(sres.renders[0]),
                           sres.seconds, True, {"history": sres.history[0]})
            else:
                st = Stage("search", best.normalized, best.audio, dict(best.metrics), int(sres.renders[0]),
                           sres.seconds, False, {"history": sres.history[0]})
            stages.append(st)
            best = st
            timing["search_s"] = sres.seconds

        final = _final_stage(opts, synth, render, best.normalized, target, floor_db, outs, say)
        final_n = final.normalized

    proxy_audio = None
    if refiner is not None:
        try:
            t0 = time.perf_counter()
            proxy_audio = refiner.render(final_n[None], seed=opts.seed)[0]
            timing["figure_s"] = time.perf_counter() - t0
        except Exception as e:  # the figure must not cost the user the preset
            say(f"warning: no proxy render for the figure ({type(e).__name__}: {e})")
    timing["total_s"] = time.perf_counter() - t_all
    return MatchResult(target, stages, final, proxy_audio, sr, timing, synth)


def _final_stage(opts: Options, synth: Any, render: Callable, normalized: np.ndarray, target: Target,
                 floor_db: float, outs: OutputSet | None, say: Callable[[str], None]) -> Stage:
    """Write the preset, read it back and render it: the audio we report is that of the file."""
    from training.search import rms_db

    final_n = _write_preset(opts, synth, normalized, outs)
    audio, ok = render(final_n[None])
    if not ok[0]:
        raise RuntimeError("the real synth failed to render the written preset twice; see the worker log above")
    final = Stage("final", final_n, audio[0], _metrics(audio[0], target.audio, target.sample_rate), 1, 0.0)
    level = float(max(rms_db(audio[:1])[0], -200.0))  # -200 dBFS: digital silence
    final.extra["level_db"] = level
    final.extra["target_level_db"] = floor_db + QUIET_DB
    if level < floor_db:
        say(f"warning: the preset plays {floor_db + QUIET_DB - level:.0f} dB quieter than the target "
            "(no audible candidate was found; try --note, --hold or --quality best)")
    return final


def _write_preset(opts: Options, synth: Any, normalized: np.ndarray, outs: OutputSet | None = None) -> np.ndarray:
    """Write ``synth``'s preset files for PATCH (e.g. PATCH.amSynth and PATCH.fxp) into the
    output set ``outs`` (a temporary folder beside PATCH until the set is committed); return the
    normalized values read back from the written primary file (what the synth will load)."""
    presets = synth.presets
    own = outs is None
    outs = OutputSet() if own else outs
    try:
        tmpdir = outs.tempdir(opts.out)
        primary = tmpdir / opts.out.name
        written = presets.write(str(primary), opts.name, np.asarray(normalized, dtype=np.float64))
        back = np.asarray(presets.read(str(primary), 0)[1], dtype=np.float64)  # slot 0 of a written bank
        finals = []
        for w in written:
            final = opts.out.parent / Path(w).relative_to(tmpdir)
            outs.adopt(w, final)
            finals.append(str(final))
        opts.preset_files[:] = finals
    except BaseException:
        if own:
            outs.discard()
        raise
    if own:
        outs.commit()
    return back


def write_outputs(opts: Options, result: MatchResult, outs: OutputSet | None = None) -> dict[str, str]:
    """PATCH.wav, PATCH.png and PATCH.json into the output set ``outs`` (the preset files are
    already in it); without one they are written at once, as a set."""
    if outs is None:
        with OutputSet() as own:
            return write_outputs(opts, result, own)
    from proxies.render import write_wav
    from training.report import spectrogram_png

    sr = result.sample_rate
    extra = {os.path.splitext(f)[1].lstrip(".").lower() or "preset": f for f in opts.preset_files if f != str(opts.out)}
    paths = {"preset": str(opts.out), **extra,
             "wav": str(opts.out.with_suffix(".wav")), "png": str(opts.out.with_suffix(".png")),
             "json": str(opts.out.with_suffix(".json"))}
    write_wav(outs.path(paths["wav"]), result.final.audio, sr)
    rows = [(f"target ({result.target.duration_s:g} s at {sr} Hz, note-off {result.target.hold_s:.2f} s)",
             result.target.audio)]
    if result.proxy_audio is not None:
        rows.append(("proxy render of the preset", result.proxy_audio))
    synth = result.synth if result.synth is not None else options_synth(opts)
    rows.append((f"real {synth.name} render (mss {result.final.metrics['mss']:.3f})", result.final.audio))
    outs.write_bytes(paths["png"], spectrogram_png(rows, sr, title=f"{opts.target.name} -> {opts.out.name}, "
                                                                  f"note {result.target.note}"))
    from training.search import rms_db

    t = result.target
    report = {
        "target": result.target.source,
        "conditioning": result.target.messages,
        "note": result.target.note,
        "note_source": result.target.note_source,
        "f0_hz": result.target.f0_hz,
        "run": str(opts.run) if opts.run is not None else None,
        "model": str(opts.run) if opts.run is not None else f"shipped:{opts.synth}",
        "quality": opts.quality,
        "sample_rate": sr,
        "n_samples": int(t.audio.shape[1]),
        "duration_s": t.duration_s,
        "hold_s": t.hold_s,
        "hold_source": t.hold_source,
        "model_note": t.model_note,
        "stages": [{"name": s.name, "metrics": s.metrics, "renders": s.renders, "seconds": s.seconds,
                    "improved": s.improved, "level_db": float(max(rms_db(s.audio[None])[0], -200.0)),
                    **{k: v for k, v in s.extra.items() if k not in ("history",)}}
                   for s in result.stages],
        "kept": max((s for s in result.stages if s.improved), key=lambda s: result.stages.index(s)).name,
        "final": {"metrics": result.final.metrics, "normalized": result.final.normalized.tolist(),
                  "uses_noise": not bool(synth.reproducible(result.final.normalized[None])[0]),
                  "level_db": result.final.extra.get("level_db"),
                  "target_level_db": result.final.extra.get("target_level_db")},
        "synth": synth.name,
        "parameters": {n: float(v) for n, v in zip(synth.spec.names, result.final.normalized)},
        "timing": result.timing,
        "files": paths,
        "options": {"note": opts.note, "hold": opts.hold, "quality": opts.quality, "refine_steps": opts.refine_steps,
                    "search_renders": opts.search_renders, "refine_lr": opts.refine_lr, "snapshots": opts.snapshots,
                    "seed": opts.seed, "max_seconds": opts.max_seconds},
    }
    outs.write_json(paths["json"], report)  # strict JSON: a non-finite distance is written as null
    return paths


def format_stages(result: MatchResult) -> str:
    lines = [f"{'stage':<10} {'mss':>8} {'log-mel L1 dB':>14} {'MFCC L1':>9} {'renders':>8} {'seconds':>8}  kept"]
    for s in result.stages + [result.final]:
        m = s.metrics
        flag = "yes" if s.improved else ""
        if s.name == "final":
            flag = "(the written preset, re-rendered)"
        lines.append(f"{s.name:<10} {m.get('mss', math.nan):8.4f} {m.get('logmel_l1', math.nan):14.3f} "
                     f"{m.get('mfcc_l1', math.nan):9.3f} {s.renders:8d} {s.seconds:8.2f}  {flag}")
    t = result.timing
    parts = [f"{k[:-2]} {v:.1f} s" for k, v in t.items() if k.endswith("_s") and k != "total_s" and v >= 0.05]
    lines.append(f"time: {t.get('total_s', 0.0):.1f} s from reading the sound to the preset ({', '.join(parts)})")
    return "\n".join(lines)


def match_one(opts: Options, predictor: Any = None, say: Callable[[str], None] = print,
              synth: Any = None) -> tuple[MatchResult, dict]:
    """Match one sound and write its files as one set (a failure leaves a previous set as it was)."""
    with OutputSet() as outs:
        result = run_match(opts, say=say, predictor=predictor, outs=outs, synth=synth)
        paths = write_outputs(opts, result, outs)
    return result, paths


def match_folder(opts: Options, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every audio file under ``opts.target`` -> one preset each under ``opts.out`` (same
    sub-folders) and ``opts.out/index.html``; sounds already matched are skipped (resumable);
    one model load, one compilation per judged length and rate."""
    from tqdm import tqdm

    from training.gallery import item_status, plan_folder, record_failure, summarise_folder, summary_line, \
        write_gallery
    from training.cli import MatchError

    synth = options_synth(opts)
    items = plan_folder(opts.target, opts.out, synth.presets.write_suffix)
    todo = [k for k, it in enumerate(items) if not it.done]
    say(f"{len(items)} sound(s) in {opts.target}: {len(items) - len(todo)} already matched, {len(todo)} to match "
        f"(quality {opts.quality})")
    predictor, page = None, None
    if todo:  # once for the folder, outside the per-sound errors: a damaged model stops here with its fix
        enable_compilation_cache()
        predictor = load_model(opts)
    title = f"{opts.target.name or opts.target} matched with {synth.name}"
    bar = tqdm(todo, unit="sound", desc="match folder", dynamic_ncols=True)
    for k in bar:
        it = items[k]
        bar.set_postfix_str(it.source.name[:40])
        one = dataclasses.replace(opts, target=it.source, out=it.preset, name=it.source.stem, preset_files=[])
        it.preset.parent.mkdir(parents=True, exist_ok=True)
        try:
            result, _ = match_one(one, predictor, say=lambda m: bar.write(f"  {it.source.name}: {m}"), synth=synth)
            items[k] = item_status(it.source, it.preset)
            bar.write(f"{it.source.name}: mss {result.final.metrics['mss']:.3f} in {result.timing['total_s']:.1f} s")
        except (MatchError, RuntimeError, OSError) as e:
            items[k] = record_failure(it, str(e))
            bar.write(f"{it.source.name}: failed: {e}")
        page = write_gallery(opts.out, items, title, synth.name, in_dir=opts.target)  # current after each sound
    bar.close()
    if page is None:  # nothing was left to match
        page = write_gallery(opts.out, items, title, synth.name, in_dir=opts.target)
    summary = summarise_folder(items)  # from the reports the items hold: none read again
    say(summary_line(summary))
    say(f"wrote {page}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Bad input: one message, exit status 2, nothing written. One sound's preset, wav, png and
    json are written as one set at the end: a failure on the way leaves a previous set as it was."""
    def body() -> int:
        opts = parse_options(argv)
        if opts.target.is_dir():
            summary = match_folder(opts)
            return 0 if not summary.get("failed") else 1
        result, paths = match_one(opts)
        print(format_stages(result))
        print("wrote: " + ", ".join(paths.values()))
        return 0

    return run_cli("python -m training.match", body, argv)


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
