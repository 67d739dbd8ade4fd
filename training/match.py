"""Match a target sound with a preset for a real synth (the run's synth).

    python -m training.match TARGET.wav --run runs/amsynth --out PATCH.amSynth
        [--note auto|MIDI] [--refine-steps N] [--search-renders M]

1. Reads the target (wav / flac / ogg / aiff / mp3: whatever libsndfile decodes; any sample
   rate, mono or stereo), resamples it to the run's rate, drops leading silence and trims or
   pads it to the run's window, saying what it did.
2. Finds the note (``--note auto``: median pYIN f0 -> nearest MIDI note; falls back to the
   run's training note when no stable pitch is found). The model was trained on one note, so it
   hears the target transposed to that note; everything else plays the target's own note.
3. Predicts a preset, re-renders it through the real plugin and scores it.
4. ``--refine-steps N``: N steps of gradient descent on the multi-resolution STFT distance
   through the differentiable proxy; a few snapshots are re-rendered through the plugin.
5. ``--search-renders M``: CMA-ES through the real plugin from the best preset so far, M renders.
6. Keeps whichever candidate scores best on the **real plugin's re-render** (so a stage never
   makes the result worse; candidates more than ``QUIET_DB`` = 20 dB quieter than the target are
   never kept, since the distance alone prefers silence to a wrong sound for short sounds) and
   writes:

   ``PATCH.amSynth``  the preset (amsynth preset text; load it in the plugin)
   ``PATCH.fxp``      the same preset as a VST2 program (41 normalized parameters)
   ``PATCH.wav``      the plugin's render of the written preset (32-bit float)
   ``PATCH.png``      log-mel spectrograms: target / proxy / plugin
   ``PATCH.json``     the distances of every stage, the note and what was done to the target

Distances: ``mss`` (multi-resolution STFT, FFT 64..2048, linear + log magnitude), log-mel L1
(dB), MFCC L1, all against the conditioned target.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from proxies.files import OutputSet
from training.cli import (_at_most, _err, _int_option, check_run_dir, enable_compilation_cache, output_path,
                          read_run_config, run_cli, run_synth)
from training.targets import Target, prepare_target

#: refinement and search keep no candidate whose plugin render is more than this many dB (RMS)
#: quieter than the target: the distance alone prefers silence to a wrong sound for short sounds
QUIET_DB = 20.0
#: upper bounds: a typo must not cost days (each search render is a plugin render; each refinement
#: step a proxy gradient)
MAX_REFINE_STEPS = 10_000
MAX_SEARCH_RENDERS = 20_000
#: what is written beside the preset (besides the synth's companion files)
COMPANIONS = (".wav", ".png", ".json")


@dataclass(frozen=True)
class Options:
    target: Path
    run: Path
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


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Parse and check every option and the target's path before any heavy work."""
    p = argparse.ArgumentParser(prog="python -m training.match", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="audio file to match (wav, flac, ogg, aiff, mp3; any rate, mono or stereo)")
    p.add_argument("--run", required=True, help="trained run directory (runs/<name>)")
    p.add_argument("--out", required=True, help="preset to write, PATCH.amSynth (.fxp/.wav/.png/.json beside it)")
    p.add_argument("--note", default="auto", help="MIDI note 0..127 the sound plays, or auto (pYIN; default)")
    p.add_argument("--refine-steps", default="0", help="gradient steps through the proxy (default 0)")
    p.add_argument("--search-renders", default="0", help="CMA-ES plugin renders after that (default 0)")
    p.add_argument("--refine-lr", default="0.3", help="Adam learning rate of the refinement (default 0.3)")
    p.add_argument("--snapshots", default="6", help="refinement snapshots re-rendered by the plugin (default 6)")
    p.add_argument("--workers", default=None, help="plugin render processes (default: the run's data.workers)")
    p.add_argument("--seed", default="0", help="seed of the search and the proxy's noise (default 0)")
    p.add_argument("--name", default=None, help="preset name (default: the target file's name)")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"), help="which checkpoint (best)")
    a = p.parse_args(argv)

    target = Path(a.target)
    if not target.exists():
        raise _err("TARGET", "an audio file", f"{a.target!r}, which does not exist", "check the path")
    if target.is_dir():
        raise _err("TARGET", "an audio file", f"{a.target!r}, a directory",
                   "give one file (python -m training.evaluate --targets DIR scores a folder)")
    run = check_run_dir(a.run, a.checkpoint)
    suffix = run_synth(run).presets.write_suffix
    out = Path(a.out)
    output_path(out, "--out", create_parents=True, suffixes=(".fxp",) + COMPANIONS)  # before any work
    if out.suffix.lower() != suffix.lower():
        raise _err("--out", f"a file name ending in {suffix} ({run_synth(run).name}'s preset file)", repr(a.out),
                   f"e.g. --out {out.with_suffix(suffix)}")
    if out.is_dir():
        raise _err("--out", "a file name", f"{a.out!r}, a directory", f"e.g. --out {out / ('patch' + suffix)}")
    note: int | str
    if str(a.note).strip().lower() == "auto":
        note = "auto"
    else:
        note = _int_option("--note", a.note, 0, 127, "give a MIDI note number (60 = middle C) or auto")
    steps = _int_option("--refine-steps", a.refine_steps, 0, None, "0 skips refinement; try 50..200")
    _at_most("--refine-steps", steps, MAX_REFINE_STEPS, "steps (each is a proxy gradient; a typo costs hours)",
             "try 50..200")
    if steps > 0 and run_synth(run).proxy is None:
        raise _err("--refine-steps", f"0 for {run_synth(run).name}, which has no differentiable proxy (refinement "
                   "descends through one)", str(steps), "drop --refine-steps; --search-renders N searches through "
                   "the real engine instead")
    renders = _int_option("--search-renders", a.search_renders, 0, None, "0 skips the search; try 100..500")
    _at_most("--search-renders", renders, MAX_SEARCH_RENDERS, "plugin renders (a typo costs hours)", "try 100..500")
    snapshots = _int_option("--snapshots", a.snapshots, 1, 64, "try 4")
    seed = _int_option("--seed", a.seed, 0, None, "any integer >= 0")
    workers = None if a.workers is None else _int_option("--workers", a.workers, 1, 256, "try 2")
    try:
        lr = float(a.refine_lr)
    except ValueError:
        lr = float("nan")
    if not (math.isfinite(lr) and 0 < lr <= 10):
        raise _err("--refine-lr", "a learning rate in (0, 10]", repr(a.refine_lr), "try 0.3")
    name = a.name if a.name is not None else out.stem
    if not name.strip() or any(c in name for c in "\n\r\0"):
        raise _err("--name", "a one-line, non-empty preset name", repr(name), "pass --name 'My patch'")
    return Options(target, run, out, note, steps, renders, lr, snapshots, workers, seed, name, a.checkpoint)


# ------------------------------------------------------------------------------ matching
@dataclass
class Stage:
    """One stage's kept candidate: its preset, plugin render and distances."""

    name: str
    normalized: np.ndarray  # [n_params]
    audio: np.ndarray  # [2, T] plugin render
    metrics: dict[str, float]
    renders: int  # plugin renders this stage used
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


def _metrics(audio: np.ndarray, target: np.ndarray, sample_rate: int) -> dict[str, float]:
    from training.evaluate_core import audio_metrics

    m = audio_metrics(audio[None], target[None], sample_rate)
    return {k: float(v[0]) for k, v in m.items()}


def run_match(opts: Options, say: Callable[[str], None] = print, predictor: Any = None,
              outs: OutputSet | None = None) -> MatchResult:
    """Everything after the option checks: condition the target, predict, refine, search. The
    preset files go into ``outs`` (committed with the other outputs; without one they are
    written at once)."""
    from training.config import from_dict

    t_all = time.perf_counter()
    cfg = from_dict(read_run_config(opts.run))
    data = cfg.data
    target = prepare_target(opts.target, data, opts.note, say)  # bad audio fails here, before JAX loads

    from training.evaluate_core import load_predictor
    from training.cma import cma_search
    from training.refine import get_refiner
    from training.search import NoteRenderer, rms_db

    sr = data.sample_rate
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    enable_compilation_cache()
    if predictor is None:
        predictor = load_predictor(opts.run, opts.which)
    timing["load_s"] = time.perf_counter() - t0
    layout = predictor.layout
    note_data = dataclasses.replace(data, note=int(target.note))
    stages: list[Stage] = []
    refiner = None
    floor_db = float(rms_db(target.audio[None])[0]) - QUIET_DB  # quieter candidates are not kept
    with NoteRenderer(data, opts.workers, log=say) as renderer:
        def render(normalized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return renderer.render_at(normalized, [target.note] * len(normalized))

        # -- model
        t0 = time.perf_counter()
        pred = predictor.predict_normalized(target.model_input[None])
        t_pred = time.perf_counter() - t0
        audio, ok = render(pred)
        if not ok[0]:
            raise RuntimeError("the plugin failed to render the model's prediction twice; see the worker log "
                               "above (this is a plugin crash, not a problem with the target)")
        best = Stage("model", pred[0], audio[0], _metrics(audio[0], target.audio, sr), 1, t_pred, True)
        stages.append(best)
        # what a later candidate must beat: the model's distance, or anything audible when the
        # model's own preset is too quiet
        best_score = best.metrics["mss"] if rms_db(audio[:1])[0] >= floor_db else math.inf
        if not math.isfinite(best_score):
            say(f"the model's preset plays more than {QUIET_DB:.0f} dB quieter than the target: any audible "
                "candidate of the refinement or the search replaces it")

        # -- refinement through the proxy
        if opts.refine_steps > 0:
            say(f"refining through the proxy: {opts.refine_steps} steps (first use compiles the proxy's "
                "gradient: minutes; later runs reuse the compilation cache)")
            refiner = get_refiner(note_data, tuple(cfg.loss.fft_sizes), 1)
            res = refiner.refine(best.normalized[None], target.audio[None], opts.refine_steps, opts.snapshots,
                                 seed=opts.seed, lr=opts.refine_lr)
            timing["refine_compile_s"] = res.compile_seconds
            t0 = time.perf_counter()
            cands = res.candidates[1:, 0]
            audio, ok = render(cands)
            loud = rms_db(audio) >= floor_db
            scores = [_metrics(a, target.audio, sr) if k and q else None for a, k, q in zip(audio, ok, loud)]
            t_render = time.perf_counter() - t0
            quiet = int((ok & ~loud).sum())
            if quiet:
                say(f"refinement: {quiet} of {len(cands)} snapshot(s) rendered more than {QUIET_DB:.0f} dB quieter "
                    "than the target and were not kept (the distance alone would prefer silence)")
            j = min(range(len(cands)), key=lambda i: scores[i]["mss"] if scores[i] else math.inf)
            improved = scores[j] is not None and scores[j]["mss"] < best_score
            extra = {"snapshot_steps": list(res.steps), "proxy_distance": res.proxy_distance[:, 0].tolist(),
                     "plugin_mss": [best.metrics["mss"]] + [s["mss"] if s else None for s in scores],
                     "kept_step": res.steps[j + 1] if improved else 0, "too_quiet": quiet}
            st = Stage("refine", cands[j] if improved else best.normalized, audio[j] if improved else best.audio,
                       scores[j] if improved else dict(best.metrics), len(cands), res.seconds + t_render,
                       improved, extra)
            stages.append(st)
            best = st
            if improved:
                best_score = st.metrics["mss"]

        # -- CMA-ES through the plugin
        if opts.search_renders > 0:
            say(f"searching with CMA-ES through the plugin: {opts.search_renders} renders")
            sres = cma_search(lambda n, rows: render(n), target.audio[None], best.normalized[None], layout,
                              opts.search_renders, sr, start_mss=np.array([best_score]), sigma0=0.1,
                              seed=opts.seed, min_level_db=floor_db)
            improved = bool(sres.best_mss[0] < best_score)
            if improved:
                audio, ok = render(sres.best)
                m = _metrics(audio[0], target.audio, sr)
                st = Stage("search", sres.best[0], audio[0], m, int(sres.renders[0]), sres.seconds, True,
                           {"history": sres.history[0]})
            else:
                st = Stage("search", best.normalized, best.audio, dict(best.metrics), int(sres.renders[0]),
                           sres.seconds, False, {"history": sres.history[0]})
            stages.append(st)
            best = st

        # -- the written preset, read back and rendered: the audio we report is that of the file
        final_n = _write_preset(opts, best.normalized, outs)
        audio, ok = render(final_n[None])
        final = Stage("final", final_n, audio[0], _metrics(audio[0], target.audio, sr), 1, 0.0)
        level = float(max(rms_db(audio[:1])[0], -200.0))  # -200 dBFS: digital silence
        final.extra["level_db"] = level
        final.extra["target_level_db"] = floor_db + QUIET_DB
        if level < floor_db:
            say(f"warning: the preset plays {floor_db + QUIET_DB - level:.0f} dB quieter than the target "
                "(the model's prediction was kept as it is; try --note or a longer target)")

    # -- proxy render of the kept preset (for the figure)
    proxy_audio = None
    try:
        t0 = time.perf_counter()
        if run_synth(opts.run).proxy is None:
            pass  # no proxy: the figure shows the target and the real engine's render
        elif refiner is None:
            say("rendering the kept preset through the proxy for the figure (first use compiles the proxy)")
            refiner = get_refiner(note_data, tuple(cfg.loss.fft_sizes), 1)
        if refiner is not None:
            proxy_audio = refiner.render(final_n[None], seed=opts.seed)[0]
            timing["proxy_figure_s"] = time.perf_counter() - t0
    except Exception as e:  # the figure must not cost the user the preset
        say(f"warning: no proxy render for the figure ({type(e).__name__}: {e})")
    timing["total_s"] = time.perf_counter() - t_all
    return MatchResult(target, stages, final, proxy_audio, sr, timing)


def _write_preset(opts: Options, normalized: np.ndarray, outs: OutputSet | None = None) -> np.ndarray:
    """Write the synth's preset files for PATCH (e.g. PATCH.amSynth and PATCH.fxp) into the
    output set ``outs`` (a temporary folder beside PATCH until the set is committed); return the
    normalized values read back from the written primary file (what the synth will load)."""
    presets = run_synth(opts.run).presets
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
    rows = [("target (conditioned)", result.target.audio)]
    if result.proxy_audio is not None:
        rows.append(("proxy render of the preset", result.proxy_audio))
    rows.append((f"real plugin render (mss {result.final.metrics['mss']:.3f})", result.final.audio))
    outs.write_bytes(paths["png"], spectrogram_png(rows, sr, title=f"{opts.target.name} -> {opts.out.name}, "
                                                                  f"note {result.target.note}"))
    from training.search import rms_db

    synth = run_synth(opts.run)

    report = {
        "target": result.target.source,
        "conditioning": result.target.messages,
        "note": result.target.note,
        "note_source": result.target.note_source,
        "f0_hz": result.target.f0_hz,
        "run": str(opts.run),
        "sample_rate": sr,
        "n_samples": int(result.target.audio.shape[1]),
        "stages": [{"name": s.name, "metrics": s.metrics, "renders": s.renders, "seconds": s.seconds,
                    "improved": s.improved, "level_db": float(max(rms_db(s.audio[None])[0], -200.0)),
                    **{k: v for k, v in s.extra.items() if k != "history"}}
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
        "options": {"note": opts.note, "refine_steps": opts.refine_steps, "search_renders": opts.search_renders,
                    "refine_lr": opts.refine_lr, "snapshots": opts.snapshots, "seed": opts.seed},
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
        lines.append(f"{s.name:<10} {m['mss']:8.4f} {m['logmel_l1']:14.3f} {m['mfcc_l1']:9.3f} {s.renders:8d} "
                     f"{s.seconds:8.2f}  {flag}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Bad input: one message, exit status 2, nothing written. The preset, wav, png and json are
    written as one set at the end: a failure on the way leaves a previous set as it was."""
    def body() -> int:
        opts = parse_options(argv)
        with OutputSet() as outs:
            result = run_match(opts, outs=outs)
            paths = write_outputs(opts, result, outs)
        print(format_stages(result))
        print("wrote: " + ", ".join(paths.values()))
        return 0

    return run_cli("python -m training.match", body, argv)


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
