"""Training throughput and peak memory of a config (default: configs/amsynth.toml).

Times the jitted train steps on synthetic audio of the config's shape (no rendering): the
parameter-loss step and, when the schedule uses it, the full step with the spectral loss
through the proxy; then the proxy renders of the evaluation's ``model+proxy_search`` (per
candidate, per target). The steps run on the run's device mesh as in ``training.fit`` (``[run]
devices``; on CPU one device per core, see ``diffsynth.runtime``: ``--set run.devices=1`` times
them on one). Reports compile time, steps/s, sounds/s, peak RSS (``getrusage``) and the JAX
device's memory statistics where the backend has them.

    python -m benchmarks.train [--config configs/amsynth.toml] [--steps 10] [--set section.key=value ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/amsynth.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--steps", type=int, default=10, help="timed steps per step kind (after one compile step)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)

    from training.config import load_config

    cfg = load_config(args.config, args.overrides)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from training.data import spec_of
    from training.features import make_feature_fn
    from training.heads import head_layout
    from training.losses import schedule_weights
    from training.proxy_loss import make_distance_fn, make_proxy_render
    from training.state import make_mesh, replicate, shard_batch
    from training.train import compiled_steps, create_train_state, step_loss_config

    layout = head_layout(spec_of(cfg.data.synth), cfg.data.frozen)
    rng = np.random.default_rng(0)
    b, t = cfg.optim.batch_size, cfg.data.n_samples
    audio = (0.1 * rng.standard_normal((max(b, 64), 2, t))).astype(np.float32)
    normalized = spec_of(cfg.data.synth).sample_normalized(rng, b).astype(np.float32)
    feature_fn = make_feature_fn(cfg.features, cfg.data.sample_rate)
    mesh = make_mesh(cfg.run, b)  # as training.fit: on CPU one device per core (diffsynth.runtime)
    state = replicate(create_train_state(cfg, layout, feature_fn, audio), mesh)
    uses_spectral = any(schedule_weights(s, cfg.loss)[1] > 0 for s in range(cfg.optim.steps))
    render_fn = make_proxy_render(cfg.data) if uses_spectral else None
    distance_fn = make_distance_fn(cfg.loss) if uses_spectral else None
    step_param, step_full, _ = compiled_steps(step_loss_config(cfg), layout, feature_fn, render_fn, distance_fn, mesh)
    lo, hi = cfg.data.note_range or (cfg.data.note, cfg.data.note)
    batch = shard_batch({"audio": audio[:b], "normalized": normalized,
                         "pitch": rng.integers(lo, hi + 1, b).astype(np.int32),  # each sound its own note, as in fit
                         "velocity": np.full((b,), cfg.data.velocity, np.int32)}, mesh)
    key = jax.random.key(0)

    results: dict = {
        "config": args.config, "overrides": args.overrides, "batch_size": b, "n_samples": t,
        "model": cfg.model.kind, "features": cfg.features.kind, "schedule": cfg.loss.schedule,
        "spectral_batch_size": cfg.loss.spectral_batch_size or b,
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "mesh_devices": mesh.size,
        "cpu": platform.processor() or platform.machine(),
        "n_weights": int(sum(x.size for x in jax.tree.leaves(state.params))),
    }
    kinds = [("param", step_param, jnp.asarray([1.0, 0.0]))]
    if step_full is not None:
        kinds.append(("spectral", step_full, jnp.asarray([1.0, 1.0])))
    for name, fn, weights in kinds:
        t0 = time.perf_counter()
        state, m = fn(state, batch, weights, key)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(args.steps):
            state, m = fn(state, batch, weights, jax.random.fold_in(key, i))
        jax.block_until_ready(m)
        dt = time.perf_counter() - t0
        results[name] = {"compile_and_first_step_s": round(compile_s, 2), "steps_per_s": round(args.steps / dt, 3),
                         "sounds_per_s": round(args.steps * b / dt, 1), "s_per_step": round(dt / args.steps, 4)}
        print(f"{name:>8} step: {args.steps / dt:8.2f} steps/s  ({dt / args.steps * 1e3:7.1f} ms/step, batch {b}), "
              f"compile + first step {compile_s:.1f} s", flush=True)

    if cfg.eval.proxy_search_rounds > 0:  # the evaluation's model+proxy_search: proxy forward renders
        from training.proxy_search import proxy_distances

        spec = spec_of(cfg.data.synth)
        results["proxy_search"] = {}
        for pb in (64, 128, 256):
            presets = spec.sample_normalized(rng, 2 * pb)
            target = np.resize(audio, (2 * pb, 2, t))
            t0 = time.perf_counter()
            proxy_distances(cfg.data, presets[:pb], target[:pb], batch_size=pb)
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            proxy_distances(cfg.data, presets, target, batch_size=pb)
            ms = (time.perf_counter() - t0) / (2 * pb) * 1e3
            per_target = ms * (1 + cfg.eval.proxy_search_rounds * cfg.eval.proxy_search_candidates) / 1e3
            results["proxy_search"][str(pb)] = {"ms_per_render": round(ms, 2), "s_per_target": round(per_target, 3),
                                                "compile_and_first_batch_s": round(compile_s, 2)}
            print(f"proxy search: {ms:6.2f} ms per candidate render (batch {pb}), {per_target:.2f} s per target "
                  f"({cfg.eval.proxy_search_rounds} x {cfg.eval.proxy_search_candidates} + 1 renders), compile + "
                  f"first batch {compile_s:.1f} s", flush=True)

    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results["peak_rss_mib"] = round(rss_kb / 1024, 1)
    stats = None
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # backends without memory statistics
        stats = None
    if stats:
        results["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
    print(f"peak RSS {results['peak_rss_mib']:.0f} MiB" +
          (f"; device peak {stats.get('peak_bytes_in_use', 0) / 2**20:.0f} MiB" if stats else
           "; device memory stats: not available on this backend"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (see diffsynth.runtime)
    sys.exit(main())
