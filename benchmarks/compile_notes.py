"""Compilations of the proxy when targets play different notes (pitch and velocity are traced).

    python -m benchmarks.compile_notes [--synth amsynth] [--notes 48 55 60 67 72] [--gradient] [--json OUT]

Scores one preset at each note through ``training.proxy_search.proxy_distances`` (the proxy's
forward pass, as ``training.evaluate`` and the fit's evaluation use it) and, with
``--gradient``, refines it one step through ``training.refine.ProxyRefiner`` (the proxy's
gradient, as ``training.match`` uses it). Counts XLA compilations (``jax.monitoring``'s
compilation events) and their time per note: with traced pitch the first note compiles and the
others reuse it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile_notes", description=__doc__.split("\n\n")[0])
    p.add_argument("--synth", default="amsynth")
    p.add_argument("--notes", type=int, nargs="+", default=[48, 55, 60, 67, 72])
    p.add_argument("--gradient", action="store_true", help="also time the refinement step (the proxy's gradient)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    from jax import monitoring

    from training.config import load_config
    from training.data import synth_of
    from training.proxy_search import proxy_distances

    compiles: list[float] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/compilation_cache/compile_time_saved_sec" or "backend_compile" in event:
            compiles.append(duration)

    monitoring.register_event_duration_secs_listener(listener)
    jax.config.update("jax_enable_compilation_cache", False)
    cfg = load_config(None, [f'data.synth="{args.synth}"'])
    synth = synth_of(cfg.data)
    preset = synth.sample_presets(np.random.default_rng(0), 1)
    target = np.zeros((1, synth.channels, cfg.data.n_samples), np.float32)
    rows = []
    for note in args.notes:
        data = dataclasses.replace(cfg.data, note=int(note))
        before = len(compiles)
        t0 = time.perf_counter()
        proxy_distances(data, preset, target, batch_size=8)
        fwd_s = time.perf_counter() - t0
        row = {"note": note, "forward_s": round(fwd_s, 3), "forward_compiles": len(compiles) - before}
        if args.gradient:
            from training.refine import ProxyRefiner

            before = len(compiles)
            t0 = time.perf_counter()
            ProxyRefiner(data, tuple(cfg.loss.fft_sizes), 1).refine(preset, target + 1e-3, 1, 1)
            row.update(gradient_s=round(time.perf_counter() - t0, 3), gradient_compiles=len(compiles) - before)
        rows.append(row)
        print(row, flush=True)
    out = {"synth": args.synth, "notes": rows, "total_compiles": len(compiles),
           "compile_seconds": round(float(sum(compiles)), 2)}
    print(json.dumps(out))
    if args.json:
        from proxies.files import atomic_write_json

        atomic_write_json(args.json, out)
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    raise SystemExit(main())
