"""Proxy fidelity: how closely a proxy renders what the real plugin renders.

Usage::

    python -m proxies.fidelity amsynth --n N --presets random|factory [--seed S] [--sr 44100]
        [--json OUT] [--workers 2] [--batch 16] [--diagnose 5]

For ``N`` presets without noise ("clean") and ``N`` with an oscillator or LFO noise / sample-
and-hold waveform ("noise"), each is rendered through the real plugin (``proxies.host``
render pool, deterministic protocol) and through the proxy (calibration + JAX render, exact
mode), note 60, velocity 100, hold 1.0 s, render 1.5 s. Reported per group:

* SNR (dB) of proxy vs plugin over both channels: median and 10th percentile;
* multi-resolution STFT distance (``diffsynth.losses.multi_resolution_stft_loss``, FFT
  64..2048, linear + log magnitude) proxy vs plugin, and the same distance between the
  plugin renders of two *different* presets (each preset vs another preset of the group,
  a fixed derangement): ``mss_ratio = mean(proxy distance) / mean(preset-to-preset
  distance)``. Noise presets match sample for sample only because the render pool renders
  them in a fresh fork and the proxy replays the plugin's generator
  (:mod:`proxies.amsynth.noise`); otherwise the ratio is their figure of merit.

**Diagnosis.** For the ``--diagnose`` worst clean presets (by SNR), both engines re-render
the preset with one stage removed at a time, by parameter edits that mean the same in both
(reverb wet 0; crunch 0; master volume x0.2, below the limiter threshold - the distortion is
homogeneous, so only the limiter's action changes; filter bypassed; filter envelope amount 0;
LFO depths 0; sync off; osc1 only; osc2 only). The stage whose removal raises the SNR most
(by >= 6 dB) is reported as responsible; when none does the error is spread over stages.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np

from proxies.files import atomic_write_json

__all__ = ["snr_db", "ABLATIONS", "select_presets", "evaluate", "main"]

#: stage -> normalized overrides that remove it (``"master_vol"`` values are multipliers).
ABLATIONS: dict[str, dict[str, float]] = {
    "reverb": {"reverb_wet": 0.0},
    "distortion": {"distortion_crunch": 0.0},
    "limiter": {"master_vol": 0.2},
    "filter": {"filter_type": 1.0},
    "filter_envelope": {"filter_env_amount": 0.5},
    "lfo": {"freq_mod_amount": 0.0, "filter_mod_amount": 0.0, "amp_mod_amount": 0.0},
    "sync": {"osc2_sync": 0.0},
    "osc1_only": {"osc_mix": 0.0, "osc_mix_mode": 0.0},
    "osc2_only": {"osc_mix": 1.0, "osc_mix_mode": 0.0},
}
_MULTIPLY = {"master_vol"}
SNR_CAP_DB = 200.0


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """SNR (dB) of ``estimate`` against ``reference`` over all axes but the first, capped."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    err = ref - np.asarray(estimate, np.float64).reshape(len(reference), -1)
    s = np.sum(ref ** 2, axis=1)
    e = np.sum(err ** 2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10 * np.log10(s / e)
    out = np.where(e == 0, SNR_CAP_DB, out)
    out = np.where((s == 0) & (e > 0), -SNR_CAP_DB, out)
    return np.clip(out, -SNR_CAP_DB, SNR_CAP_DB)


def select_presets(synth: str, source: str, n: int, seed: int) -> dict[str, tuple[np.ndarray, list[str]]]:
    """``{"clean": (normalized [n, P], names), "noise": (...)}`` from the prior or the factory banks."""
    if synth != "amsynth":
        raise ValueError(f"no proxy for {synth!r}; expected 'amsynth'")
    from proxies.amsynth.spec import AMSYNTH, uses_noise

    rng = np.random.default_rng(seed)
    if source == "random":
        clean, noise = [], []
        while len(clean) < n or len(noise) < n:
            draw = AMSYNTH.sample_normalized(rng, 4 * n)
            flags = uses_noise(draw)
            clean += list(draw[~flags])
            noise += list(draw[flags])
        return {"clean": (np.array(clean[:n]), [f"random-{seed}-clean-{i}" for i in range(n)]),
                "noise": (np.array(noise[:n]), [f"random-{seed}-noise-{i}" for i in range(n)])}
    if source == "factory":
        from proxies.amsynth.presets import load_factory_banks

        fp = load_factory_banks()
        order = rng.permutation(len(fp))
        flags = uses_noise(fp.normalized)
        out = {}
        for group, want in (("clean", False), ("noise", True)):
            idx = [int(i) for i in order if bool(flags[i]) == want][:n]
            out[group] = (np.asarray(fp.normalized[idx]), [fp.names[i] for i in idx])
        return out
    raise ValueError(f"--presets must be 'random' or 'factory', got {source!r}")


def _ablate(normalized: np.ndarray, stage: str) -> np.ndarray:
    from proxies.amsynth.spec import AMSYNTH

    out = np.array(normalized, dtype=np.float64, copy=True)
    for name, value in ABLATIONS[stage].items():
        i = AMSYNTH.index_of(name)
        out[..., i] = out[..., i] * value if name in _MULTIPLY else value
    return out


class _Engines:
    """The plugin (render pool) and the proxy (jitted, fixed batch size) for one config."""

    def __init__(self, sample_rate: int, workers: int, batch: int):
        import jax

        from proxies import host
        from proxies.amsynth import calibration as cal

        self.cal = cal
        self.host = host
        self.config = cal.ProxyConfig(sample_rate=sample_rate, duration_s=1.5, note=60, velocity=100, hold_s=1.0)
        self.batch = batch
        self.pool = host.RenderPool("amsynth", workers=workers, sample_rate=sample_rate)
        self._render = jax.jit(cal.render, static_argnums=1)

    def plugin(self, normalized: np.ndarray) -> np.ndarray:
        note = self.host.Note(self.config.note, self.config.velocity, 0.0, self.config.hold_s)
        audio, failures = self.pool.render_batch(normalized, notes=(note,), duration_s=self.config.duration_s)
        if failures:
            print(f"warning: {len(failures)} plugin renders failed: {failures[:3]}", file=sys.stderr)
        return audio

    def proxy(self, normalized: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(normalized), self.batch):
            chunk = np.asarray(normalized[i:i + self.batch], np.float32)
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            audio = np.asarray(self._render(self.cal.to_proxy(chunk), self.config))
            out.append(audio[: self.batch - pad])
        return np.concatenate(out)

    def close(self) -> None:
        self.pool.close()


def _mss(a: np.ndarray, b: np.ndarray, batch: int = 16) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    from diffsynth.losses import multi_resolution_stft_loss

    f = jax.jit(lambda x, y: jnp.mean(multi_resolution_stft_loss(x, y), axis=-1))
    return np.concatenate([np.asarray(f(jnp.asarray(a[i:i + batch]), jnp.asarray(b[i:i + batch])))
                           for i in range(0, len(a), batch)])


def _group_stats(plugin: np.ndarray, proxy: np.ndarray, seed: int) -> dict:
    n = len(plugin)
    snr = snr_db(plugin, proxy)
    d = _mss(proxy, plugin)
    perm = np.random.default_rng(seed + 1).permutation(n)
    other = np.roll(perm, 1)[np.argsort(perm)] if n > 1 else np.arange(n)  # a derangement
    d_ref = _mss(plugin[other], plugin)
    return {
        "n": int(n),
        "median_snr_db": float(np.median(snr)),
        "p10_snr_db": float(np.percentile(snr, 10)),
        "min_snr_db": float(np.min(snr)),
        "mss_mean": float(np.mean(d)),
        "mss_ref_mean": float(np.mean(d_ref)),
        "mss_ratio": float(np.mean(d) / max(np.mean(d_ref), 1e-12)),
        "mss_ratio_median": float(np.median(d / np.maximum(d_ref, 1e-12))),
        "snr_db": [round(float(x), 2) for x in snr],
        "mss": [round(float(x), 5) for x in d],
    }


def diagnose(engines: _Engines, normalized: np.ndarray, names: Sequence[str], snr: np.ndarray) -> list[dict]:
    """Per preset: SNR with each stage removed (both engines); the responsible stage."""
    stages = list(ABLATIONS)
    batch = np.concatenate([_ablate(normalized, s) for s in stages])  # [S * K, P]
    a = engines.plugin(batch)
    b = engines.proxy(batch)
    s_all = snr_db(a, b).reshape(len(stages), len(normalized))
    out = []
    for k in range(len(normalized)):
        gains = {s: float(s_all[j, k] - snr[k]) for j, s in enumerate(stages)}
        best = max(gains, key=gains.get)
        out.append({
            "name": names[k], "snr_db": round(float(snr[k]), 2),
            "stage": best if gains[best] >= 6.0 else "spread (no single stage)",
            "ablation_snr_db": {s: round(float(s_all[j, k]), 2) for j, s in enumerate(stages)},
        })
    return out


def evaluate(synth: str, n: int, presets: str, seed: int = 0, sample_rate: int = 44100, workers: int = 2,
             batch: int = 16, n_diagnose: int = 5, log=print) -> dict:
    """Run the whole report; returns the JSON-able dict."""
    groups = select_presets(synth, presets, n, seed)
    engines = _Engines(sample_rate, workers, batch)
    report = {"synth": synth, "presets": presets, "seed": seed, "sample_rate": sample_rate,
              "note": 60, "velocity": 100, "hold_s": 1.0, "duration_s": 1.5}
    try:
        for group, (normalized, names) in groups.items():
            t0 = time.time()
            a = engines.plugin(normalized)
            t1 = time.time()
            b = engines.proxy(normalized)
            t2 = time.time()
            ok = np.all(np.isfinite(a.reshape(len(a), -1)), axis=1)
            stats = _group_stats(a[ok], b[ok], seed)
            stats["names"] = [nm for nm, k in zip(names, ok) if k]
            stats["plugin_s"], stats["proxy_s"] = round(t1 - t0, 2), round(t2 - t1, 2)
            log(f"{group:5s}: n={stats['n']} median SNR {stats['median_snr_db']:.1f} dB, p10 {stats['p10_snr_db']:.1f} dB, "
                f"MSS {stats['mss_mean']:.4f} vs preset-to-preset {stats['mss_ref_mean']:.4f}: ratio "
                f"{stats['mss_ratio']:.4f} (median per preset {stats['mss_ratio_median']:.4f})")
            if group == "clean" and n_diagnose > 0:
                snr = np.asarray(stats["snr_db"])
                worst = np.argsort(snr)[:n_diagnose]
                norm_ok = normalized[ok]
                stats["worst"] = diagnose(engines, norm_ok[worst], [stats["names"][i] for i in worst], snr[worst])
                for w in stats["worst"]:
                    log(f"  worst: {w['name']!r} {w['snr_db']:.1f} dB -> {w['stage']}")
            report[group] = stats
    finally:
        engines.close()
    return report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m proxies.fidelity", description=__doc__.split("\n\n")[0])
    p.add_argument("synth", choices=("amsynth",))
    p.add_argument("--n", type=int, required=True, help="presets per group (clean and noise)")
    p.add_argument("--presets", choices=("random", "factory"), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sr", type=int, default=44100)
    p.add_argument("--json", default=None, metavar="OUT", help="write the report here")
    p.add_argument("--workers", type=int, default=2, help="plugin render processes (default 2)")
    p.add_argument("--batch", type=int, default=16, help="proxy batch size (default 16)")
    p.add_argument("--diagnose", type=int, default=5, help="worst clean presets to diagnose (default 5)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.n < 2:
        raise SystemExit(f"--n must be >= 2 (the reference distance needs two presets); got {args.n}")
    report = evaluate(args.synth, args.n, args.presets, args.seed, args.sr, args.workers, args.batch, args.diagnose)
    if args.json:
        atomic_write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
