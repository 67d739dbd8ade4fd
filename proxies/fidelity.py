"""Proxy fidelity: how closely a synth's proxy renders what its real engine renders.

Usage::

    python -m proxies.fidelity SYNTH --n N --presets random|factory [--seed S] [--sr 44100]
        [--json OUT] [--workers 2] [--batch 16] [--diagnose 5] [--mode exact|relaxed]

For ``N`` presets that render reproducibly ("clean") and, where the synth has any, ``N`` that do
not ("noise": amsynth's oscillator or LFO noise / sample-and-hold), each is rendered through the
real engine (``Synth.open_engine``: the render pool's deterministic protocol, or the in-process
engine) and through the proxy (``Synth.proxy``: calibration + JAX render, exact mode unless
``--mode relaxed``), note 60, velocity 100, hold 1.0 s, render 1.5 s. Reported per group:

* SNR (dB) of proxy vs engine over all channels: median and 10th percentile;
* multi-resolution STFT distance (``diffsynth.losses.multi_resolution_stft_loss``, FFT
  64..2048, linear + log magnitude) proxy vs engine, and the same distance between the
  engine renders of two *different* presets (each preset vs another preset of the group,
  a fixed derangement): ``mss_ratio = mean(proxy distance) / mean(preset-to-preset
  distance)``. amsynth's noise presets match sample for sample only because the render pool
  renders them in a fresh fork and the proxy replays the plugin's generator; otherwise the ratio
  is their figure of merit.
* ``by_group``: the same figures per label of ``Synth.group_of`` (DX7: per algorithm).

**Diagnosis.** For the ``--diagnose`` worst clean presets (by SNR), both engines re-render
the preset with one stage removed at a time, by the synth's ``ablations`` (parameter edits that
mean the same in both). The stage whose removal raises the SNR most (by >= 6 dB) is reported as
responsible; when none does the error is spread over stages.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np

from proxies.files import OutputPathError, atomic_write_json, check_output_path, guarded_main
from proxies.notes import Note, check_sample_rate
from proxies.synth import Synth, SynthNotFoundError, get_synth, list_synths

__all__ = ["snr_db", "select_presets", "evaluate", "main"]

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


def select_presets(synth: Synth, source: str, n: int, seed: int) -> dict[str, tuple[np.ndarray, list[str]]]:
    """``{"clean": (normalized [n, P], names), "noise": (...)}`` from the synth's prior or its
    human corpus. A synth whose presets all render reproducibly has no "noise" group. Fewer
    corpus presets than ``n`` is an error naming how many there are."""
    rng = np.random.default_rng(seed)
    if source == "random":
        clean, noise = [], []
        has_noise = True
        draws = 0
        while len(clean) < n or (has_noise and len(noise) < n):
            draw = synth.sample_presets(rng, 4 * n)
            flags = ~np.asarray(synth.reproducible(draw), dtype=bool)
            clean += list(draw[~flags])
            noise += list(draw[flags])
            draws += 1
            if draws >= 3 and not noise:
                has_noise = False  # this synth's prior never makes a non-reproducible preset
        out = {"clean": (np.array(clean[:n]), [f"random-{seed}-clean-{i}" for i in range(n)])}
        if noise:
            out["noise"] = (np.array(noise[:n]), [f"random-{seed}-noise-{i}" for i in range(min(n, len(noise)))])
        return out
    if source == "factory":
        if synth.presets.corpus is None:
            raise ValueError(f"{synth.name} has no human preset corpus; use --presets random")
        names, normalized = synth.presets.corpus()
        normalized = np.asarray(normalized, np.float64)
        order = rng.permutation(len(names))
        flags = ~np.asarray(synth.reproducible(normalized), dtype=bool)
        out = {}
        for group, want in (("clean", False), ("noise", True)):
            idx = [int(i) for i in order if bool(flags[i]) == want][:n]
            if len(idx) < n and (group == "clean" or idx):  # never fewer than asked without saying so
                n_clean = int((~flags).sum())
                n_noise = int(flags.sum())
                most = min(n_clean, n_noise) if n_noise else n_clean
                raise ValueError(f"--n {n}: {synth.name}'s corpus has only {len(idx)} {group} presets "
                                 f"({n_clean} clean, {n_noise} noise); use --n {most} or fewer, or --presets random")
            if idx:
                out[group] = (np.asarray(normalized[idx]), [names[i] for i in idx])
        return out
    raise ValueError(f"--presets must be 'random' or 'factory', got {source!r}")


def _ablate(synth: Synth, normalized: np.ndarray, stage: str) -> np.ndarray:
    out = np.array(normalized, dtype=np.float64, copy=True)
    for name, value in synth.ablations[stage].items():
        i = synth.spec.index_of(name)
        if isinstance(value, tuple) and value[0] == "scale":
            out[..., i] = out[..., i] * float(value[1])
        else:
            out[..., i] = float(value)
    return out


class _Engines:
    """The real engine and the proxy (jitted, fixed batch size) for one render setting."""

    def __init__(self, synth: Synth, sample_rate: int, workers: int, batch: int, relaxed: bool = False):
        import jax
        import jax.numpy as jnp

        from proxies.synth import ProxyRender, proxy_renderer

        self.synth = synth
        self.note = Note(60, 100, 0.0, 1.0)
        self.config = ProxyRender(sample_rate=sample_rate, duration_s=1.5, hold_s=self.note.hold_s)
        self.batch = batch
        self.engine = synth.open_engine(sample_rate, workers=workers)
        render = proxy_renderer(synth, self.config)
        proxy = synth.proxy()
        pitch = jnp.full((batch,), self.note.pitch, jnp.int32)
        velocity = jnp.full((batch,), self.note.velocity, jnp.int32)

        def f(normalized):
            probs = proxy.one_hot(normalized) if relaxed else None  # relaxed code path, hard choices
            return render(normalized, pitch, velocity, probs)

        self._render = jax.jit(f)

    def plugin(self, normalized: np.ndarray) -> np.ndarray:
        audio, failures = self.engine.render(normalized, (self.note,), self.config.duration_s)
        if failures:
            print(f"warning: {len(failures)} {self.synth.name} renders failed: {failures[:3]}", file=sys.stderr)
        return audio

    def proxy(self, normalized: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(normalized), self.batch):
            chunk = np.asarray(normalized[i:i + self.batch], np.float32)
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            audio = np.asarray(self._render(chunk))
            out.append(audio[: self.batch - pad])
        return np.concatenate(out)

    def close(self) -> None:
        self.engine.close()


def _mss(a: np.ndarray, b: np.ndarray, batch: int = 16) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    from diffsynth.losses import multi_resolution_stft_loss

    f = jax.jit(lambda x, y: jnp.mean(multi_resolution_stft_loss(x, y), axis=-1))
    return np.concatenate([np.asarray(f(jnp.asarray(a[i:i + batch]), jnp.asarray(b[i:i + batch])))
                           for i in range(0, len(a), batch)])


def _natural(label: object) -> tuple:
    text = str(label)
    digits = "".join(c for c in text if c.isdigit())
    return (int(digits) if digits else 0, text)


def _group_stats(plugin: np.ndarray, proxy: np.ndarray, seed: int, brief: bool = False) -> dict:
    n = len(plugin)
    if brief and n < 2:  # one preset: no preset-to-preset reference
        snr = snr_db(plugin, proxy)
        return {"n": int(n), "median_snr_db": float(np.median(snr)), "min_snr_db": float(np.min(snr))}
    snr = snr_db(plugin, proxy)
    d = _mss(proxy, plugin)
    perm = np.random.default_rng(seed + 1).permutation(n)
    other = np.roll(perm, 1)[np.argsort(perm)] if n > 1 else np.arange(n)  # a derangement
    d_ref = _mss(plugin[other], plugin)
    out = {
        "n": int(n),
        "median_snr_db": float(np.median(snr)),
        "p10_snr_db": float(np.percentile(snr, 10)),
        "min_snr_db": float(np.min(snr)),
        "mss_mean": float(np.mean(d)),
        "mss_ref_mean": float(np.mean(d_ref)),
        "mss_ratio": float(np.mean(d) / max(np.mean(d_ref), 1e-12)),
        "mss_ratio_median": float(np.median(d / np.maximum(d_ref, 1e-12))),
    }
    if not brief:
        out.update(snr_db=[round(float(x), 2) for x in snr], mss=[round(float(x), 5) for x in d])
    return out


def diagnose(engines: _Engines, normalized: np.ndarray, names: Sequence[str], snr: np.ndarray) -> list[dict]:
    """Per preset: SNR with each stage removed (both engines); the responsible stage."""
    stages = list(engines.synth.ablations)
    if not stages:
        return []
    batch = np.concatenate([_ablate(engines.synth, normalized, s) for s in stages])  # [S * K, P]
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


def evaluate(synth: str | Synth, n: int, presets: str, seed: int = 0, sample_rate: int = 44100, workers: int = 2,
             batch: int = 16, n_diagnose: int = 5, log=print, mode: str = "exact") -> dict:
    """Run the whole report; returns the JSON-able dict."""
    synth = get_synth(synth)
    if synth.proxy is None:
        raise ValueError(f"{synth.name} has no differentiable proxy: there is nothing to compare its engine with")
    groups = select_presets(synth, presets, n, seed)
    engines = _Engines(synth, sample_rate, workers, batch, relaxed=mode == "relaxed")
    report = {"synth": synth.name, "presets": presets, "seed": seed, "sample_rate": sample_rate, "mode": mode,
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
            if synth.group_of is not None and stats["n"]:
                labels = np.asarray(synth.group_of(normalized[ok]))
                stats["by_group"] = {str(g): _group_stats(a[ok][labels == g], b[ok][labels == g], seed, brief=True)
                                     for g in sorted(set(labels.tolist()), key=_natural)}
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
    p.add_argument("synth", help="a synth with a proxy: " + ", ".join(list_synths()))
    p.add_argument("--mode", choices=("exact", "relaxed"), default="exact",
                   help="proxy mode: exact (default) or relaxed (the training code path, hard choices)")
    p.add_argument("--n", type=int, required=True, help="presets per group (clean and noise)")
    p.add_argument("--presets", choices=("random", "factory"), required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sr", type=int, default=44100)
    p.add_argument("--json", default=None, metavar="OUT", help="write the report here")
    p.add_argument("--workers", type=int, default=2, help="plugin render processes (default 2)")
    p.add_argument("--batch", type=int, default=16, help="proxy batch size (default 16)")
    p.add_argument("--diagnose", type=int, default=None,
                   help="worst clean presets to diagnose (default 5, or --n when smaller)")
    return p


#: upper bounds of the options (a typo must not cost days)
MAX_N = 20000
MAX_WORKERS = 256
MAX_BATCH = 1024


class FidelityError(ValueError):
    """A bad option: the message names it, what was expected and the fix."""


def check_args(args: argparse.Namespace) -> Synth:
    """Every option checked before anything renders; returns the synth. Raises FidelityError."""
    try:
        synth = get_synth(args.synth)
    except (SynthNotFoundError, OSError, ValueError) as e:
        raise FidelityError(f"synth: {e}") from None
    if synth.proxy is None:
        raise FidelityError(f"{synth.name} has no differentiable proxy: there is nothing to compare its engine with; "
                            f"pick a synth with one")
    if not 2 <= args.n <= MAX_N:
        raise FidelityError(f"--n must be in 2..{MAX_N} (the reference distance needs two presets; each preset costs "
                            f"several renders), got {args.n}")
    if args.seed < 0:
        raise FidelityError(f"--seed must be >= 0, got {args.seed}")
    try:
        check_sample_rate(args.sr)
    except ValueError as e:
        raise FidelityError(f"--sr: {e}") from None
    if not 1 <= args.workers <= MAX_WORKERS:
        raise FidelityError(f"--workers must be in 1..{MAX_WORKERS} plugin processes, got {args.workers}; try 2")
    if not 1 <= args.batch <= MAX_BATCH:
        raise FidelityError(f"--batch must be in 1..{MAX_BATCH} (proxy renders per call), got {args.batch}; try 16")
    if args.diagnose is None:
        args.diagnose = min(5, args.n)
    if not 0 <= args.diagnose <= args.n:
        raise FidelityError(f"--diagnose must be in 0..--n ({args.n}) worst presets, got {args.diagnose}")
    if args.json is not None:
        if not args.json.lower().endswith(".json"):
            raise FidelityError(f"--json must be a file name ending in .json, got {args.json!r}")
        try:
            check_output_path(args.json, "--json")
        except OutputPathError as e:
            raise FidelityError(str(e)) from None
    if args.presets == "factory" and synth.presets.corpus is None:
        raise FidelityError(f"--presets factory: {synth.name} has no human preset corpus; use --presets random")
    return synth


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = _parser().parse_args(argv)
        synth = check_args(args)
        try:
            if args.presets == "factory":  # the corpus holds enough presets: known before any render
                select_presets(synth, args.presets, args.n, args.seed)
        except ValueError as e:
            raise FidelityError(str(e)) from None
        report = evaluate(synth, args.n, args.presets, args.seed, args.sr, args.workers, args.batch, args.diagnose,
                          mode=args.mode)
        if args.json:
            atomic_write_json(args.json, report)
            print(f"wrote {args.json}")
        return 0

    return guarded_main("python -m proxies.fidelity", body, (FidelityError,), argv)


if __name__ == "__main__":
    from diffsynth.runtime import reexec_with_tunables

    reexec_with_tunables()  # once, with GLIBC_TUNABLES (diffsynth.runtime: faster JAX, same output)
    sys.exit(main())
