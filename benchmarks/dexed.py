"""dexed-py vs the Dexed JAX proxy (exact and relaxed, forward and gradient), in one run.

    python -m benchmarks.dexed [--batch 16] [--duration 1.5] [--rates 16000 44100] [--repeats 3] [--json OUT]

For each sample rate: the real engine (``Synth.open_engine``, dexed-py in threads), the proxy's
exact render, its relaxed render and the value and gradient of the multi-resolution STFT distance
through the relaxed render, on the same ``--batch`` voices from the sampling prior (note 60,
velocity 100, note held for 2/3 of the render). Reports medians of ``--repeats`` (seconds per
batch, x real time) and the compile times; ratios are proxy / engine throughput from the same run.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dexed", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--duration", type=float, default=1.5)
    p.add_argument("--rates", type=int, nargs="+", default=[16000, 44100])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from diffsynth.losses import multi_resolution_stft_loss
    from proxies.notes import Note
    from proxies.synth import ProxyRender, get_synth

    synth = get_synth("dexed")
    proxy = synth.proxy()
    voices = synth.sample_presets(np.random.default_rng(0), args.batch)
    hold = args.duration * 2 / 3
    pitch = jnp.full((args.batch,), 60, jnp.int32)
    velocity = jnp.full((args.batch,), 100, jnp.int32)
    x = jnp.asarray(voices, jnp.float32)
    out = {"batch": args.batch, "duration_s": args.duration, "rates": {}}
    audio_s = args.batch * args.duration
    for sr in args.rates:
        config = ProxyRender(sr, args.duration, hold)
        engine = synth.open_engine(sr, workers=args.workers)
        try:
            note = (Note(60, 100, 0.0, hold),)
            engine.render(voices, note, args.duration)  # warm
            t_engine = _median_time(lambda: engine.render(voices, note, args.duration), args.repeats)
            target, _ = engine.render(voices, note, args.duration)
        finally:
            engine.close()
        probs = {k: v.astype(jnp.float32) for k, v in proxy.one_hot(x).items()}
        exact = jax.jit(lambda x: proxy.render(proxy.to_controls(x, None), pitch, velocity, config, None))
        relaxed = jax.jit(lambda x, pr: proxy.render(proxy.to_controls(x, pr), pitch, velocity, config, None))
        tgt = jnp.asarray(target)

        def loss(x, pr):
            audio = proxy.render(proxy.to_controls(x, pr), pitch, velocity, config, None)
            return jnp.mean(multi_resolution_stft_loss(audio, tgt))

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        row = {}
        for name, fn in (("exact", lambda: exact(x)), ("relaxed", lambda: relaxed(x, probs)),
                         ("relaxed_grad", lambda: grad(x, probs))):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            compile_s = time.perf_counter() - t0
            t = _median_time(lambda: jax.block_until_ready(fn()), args.repeats)
            row[name] = {"seconds": round(t, 4), "x_real_time": round(audio_s / t, 1),
                         "vs_engine": round(t_engine / t, 3), "compile_s": round(compile_s, 2)}
        row["engine"] = {"seconds": round(t_engine, 4), "x_real_time": round(audio_s / t_engine, 1),
                         "workers": args.workers}
        out["rates"][str(sr)] = row
        print(f"{sr} Hz: " + "; ".join(f"{k} {v['seconds']:.3f} s ({v['x_real_time']}x real time)"
                                       for k, v in row.items()), flush=True)
    print(json.dumps(out))
    if args.json:
        from proxies.files import atomic_write_json

        atomic_write_json(args.json, out)
    return 0


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()
    raise SystemExit(main())
