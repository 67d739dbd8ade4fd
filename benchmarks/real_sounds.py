"""Real recordings matched by ``training.match`` against the best human preset found by brute force.

    python -m benchmarks.real_sounds [--synth amsynth | --run runs/NAME] [--quality default] [--out DIR]

For every recording of ``training.recordings`` (CC0 single notes; ``scripts/setup.sh`` installs
them): ``training.match`` (the shipped model unless ``--run``) writes a preset, which is scored on
the real synth's render over the whole sound at the sound's rate (``mss``); then **every** preset
of the synth's corpus (amsynth: the 3482 factory presets) is rendered with the same note, length,
rate and note-off and scored the same way, and the best of them is the brute-force baseline. The
match runs twice: the first pass compiles what a new length or rate needs (cold), the second finds
it in the compilation cache (warm); both times are reported. Writes ``DIR/real_sounds.json`` and
``DIR/real_sounds.md`` (and the presets, renders and a gallery page under ``DIR/matched``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.real_sounds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--synth", default="amsynth")
    p.add_argument("--run", default=None)
    p.add_argument("--quality", default="default")
    p.add_argument("--out", default="benchmarks/out/real_sounds")
    p.add_argument("--names", nargs="*", default=None, help="recordings to use (default: all)")
    p.add_argument("--passes", type=int, default=2, help="1: cold only; 2: cold, then warm (default); 0: only the "
                                                          "brute-force baseline (kept in DIR/factory_best.json and "
                                                          "read by later runs)")
    p.add_argument("--no-brute-force", action="store_true")
    a = p.parse_args(argv)

    from proxies.files import atomic_write_bytes, atomic_write_json
    from training.corpus import best_in_corpus_by_mss, corpus_renders
    from training.data import synth_of
    from training.match import QUALITIES, Options, load_model, match_one
    from training.recordings import RECORDINGS, copy_recordings
    from training.gallery import item_status, write_gallery
    from training.targets import prepare_whole_target

    out = Path(a.out)
    targets = out / "targets"
    names = a.names or [r.name for r in RECORDINGS]
    paths = copy_recordings(targets, names)
    recs = {r.name: r for r in RECORDINGS}
    q = QUALITIES[a.quality]
    base = Options(target=paths[0], run=Path(a.run) if a.run else None, out=out / "x.preset", note="auto",
                   refine_steps=q.refine_steps, search_renders=q.search_renders, refine_lr=0.3,
                   snapshots=q.snapshots, workers=None, seed=0, name="x", which="best",
                   synth="" if a.run else a.synth, quality=a.quality)
    t0 = time.perf_counter()
    predictor = load_model(base)
    load_s = time.perf_counter() - t0
    velocity = predictor.cfg.data.velocity
    synth = synth_of(predictor.cfg.data)
    suffix = synth.presets.write_suffix
    rows: list[dict] = []
    judged: dict[str, np.ndarray] = {}  # each sound as the match judged it (the brute force scores the same audio)
    if a.passes == 0:
        for path in paths:
            rec = recs[path.stem]
            tg = prepare_whole_target(path, predictor.cfg.data, "auto" if rec.auto_note else rec.midi, None,
                                      say=lambda m: None, note_range=predictor.cfg.data.note_range)
            judged[path.stem] = tg.audio
            rows.append({"name": path.stem, "instrument": rec.instrument, "kind": rec.kind, "note": tg.note,
                         "sample_rate": tg.sample_rate, "duration_s": tg.duration_s, "hold_s": tg.hold_s})
    for passno in range(a.passes):
        for path in paths:
            rec = recs[path.stem]
            opts = dataclasses.replace(base, target=path, out=out / "matched" / (path.stem + suffix), name=path.stem,
                                       note="auto" if rec.auto_note else rec.midi, preset_files=[])
            opts.out.parent.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            result, _ = match_one(opts, predictor, say=lambda m: None)
            wall = time.perf_counter() - t
            row = next((r for r in rows if r["name"] == path.stem), None)
            if row is None:
                row = {"name": path.stem, "instrument": rec.instrument, "kind": rec.kind}
                rows.append(row)
            tg = result.target
            judged[path.stem] = tg.audio
            row.update({"note": tg.note, "sample_rate": tg.sample_rate, "duration_s": tg.duration_s,
                        "hold_s": tg.hold_s, "hold_source": tg.hold_source,
                        "match_mss": result.final.metrics["mss"],
                        "stages": {s.name: s.metrics.get("mss") for s in result.stages},
                        "kept_from": next((s.extra.get("picked") for s in result.stages if s.name == "best_of_k"), None),
                        f"seconds_pass{passno + 1}": wall, f"timing_pass{passno + 1}": result.timing})
            print(f"[pass {passno + 1}] {path.stem}: mss {row['match_mss']:.3f} in {wall:.1f} s "
                  f"(note {tg.note}, {tg.duration_s:g} s at {tg.sample_rate} Hz, hold {tg.hold_s:.2f} s)", flush=True)
    cached = out / "factory_best.json"
    try:
        known = {r["name"]: r for r in json.loads(cached.read_text())} if cached.is_file() else {}
    except (ValueError, TypeError, KeyError) as e:
        print(f"{cached} is unreadable ({e}): the brute force runs again", flush=True)
        known = {}
    if not a.no_brute_force:
        for row in rows:
            k = known.get(row["name"])
            if k and all(k[f] == row[f] for f in ("note", "sample_rate", "duration_s", "hold_s")):
                row.update({f: k[f] for f in k if f.startswith(("factory_", "brute_force"))})
                row["beats_factory_best"] = bool(row.get("match_mss", np.inf) < row["factory_best_mss"])
                continue
            t = time.perf_counter()
            corpus = corpus_renders(synth.name, row["note"], velocity, row["sample_rate"], row["duration_s"],
                                    row["hold_s"], cache_dir=str(out / "corpus"), progress=True)
            best, mss = best_in_corpus_by_mss(corpus, judged[row["name"]], row["sample_rate"])
            row.update({"factory_best_mss": float(mss[best]), "factory_best": corpus.names[best],
                        "factory_median_mss": float(np.median(mss)), "brute_force_renders": len(mss),
                        "brute_force_s": time.perf_counter() - t,
                        "beats_factory_best": bool(row.get("match_mss", np.inf) < mss[best])})
            print(f"{row['name']}: match {row.get('match_mss', float('nan')):.3f} vs best of {len(mss)} factory presets "
                  f"{mss[best]:.3f} ({corpus.names[best]})", flush=True)
            corpus.path.unlink(missing_ok=True)  # ~2 GB per sound at 44.1 kHz: scored once, not kept
            known[row["name"]] = {f: row[f] for f in row if f in ("name", "note", "sample_rate", "duration_s",
                                                                  "hold_s") or f.startswith(("factory_", "brute"))}
            atomic_write_json(cached, list(known.values()))
    if a.passes == 0:
        print(json.dumps(rows, indent=1, default=float))
        return 0
    items = [item_status(p, out / "matched" / (p.stem + suffix)) for p in paths]
    write_gallery(out / "matched", items, "Real recordings (CC0) matched with " + synth.name, synth.name,
                  in_dir=targets)
    summary = {
        "quality": a.quality, "model": a.run or f"shipped:{a.synth}", "load_s": load_s,
        "median_match_mss": statistics.median(r["match_mss"] for r in rows),
        "median_seconds_cold": statistics.median(r["seconds_pass1"] for r in rows),
        "median_seconds_warm": statistics.median(r["seconds_pass2"] for r in rows) if a.passes > 1 else None,
    }
    if not a.no_brute_force:
        summary["median_factory_best_mss"] = statistics.median(r["factory_best_mss"] for r in rows)
        summary["median_match_minus_factory_best"] = statistics.median(r["match_mss"] - r["factory_best_mss"]
                                                                       for r in rows)
        summary["beats_factory_best"] = sum(r["beats_factory_best"] for r in rows)
    result = {"summary": summary, "sounds": rows}
    atomic_write_json(out / "real_sounds.json", result, default=float)
    lines = ["| sound | kind | note | judged | match mss | best factory preset (brute force) | seconds cold / warm |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        fb = (f"{r['factory_best_mss']:.3f} ({r['factory_best']})" if "factory_best_mss" in r else "-")
        lines.append(f"| {r['name']} | {r['kind']} | {r['note']} | {r['duration_s']:g} s, {r['sample_rate']} Hz, "
                     f"off {r['hold_s']:.2f} s | {r['match_mss']:.3f} | {fb} | {r['seconds_pass1']:.1f} / "
                     f"{r.get('seconds_pass2', float('nan')):.1f} |")
    atomic_write_bytes(out / "real_sounds.md", ("\n".join(lines) + "\n\n" + json.dumps(summary, indent=1) + "\n").encode())
    print("\n".join(lines))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()
    sys.exit(main())
