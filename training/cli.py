"""What every command line of ``training`` shares: usage errors, option parsing, run folders
and the JAX compilation cache. No heavy imports."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MatchError(ValueError):
    """A bad target file or option: the message says what was expected, what came, and the fix."""


def _err(what: str, expected: str, got: Any, fix: str) -> MatchError:
    return MatchError(f"{what}: expected {expected}, got {got}; fix: {fix}")


UsageError = MatchError  # the same error, for commands other than match


def _int_option(flag: str, text: str, lo: int, hi: int | None, fix: str) -> int:
    try:
        v = int(str(text).strip())
    except ValueError:
        v = None
    if v is None or v < lo or (hi is not None and v > hi):
        rng = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
        raise _err(flag, rng, repr(text), fix)
    return v


def check_run_dir(run: str | os.PathLike, which: str = "best") -> Path:
    """The run directory, checked without loading JAX: config.json and a checkpoint exist."""
    from training.config import ConfigError, from_dict

    p = Path(run)
    hint = "train one with `python -m training.fit --config configs/amsynth.toml` or pass --run runs/<name>"
    if not p.is_dir():
        raise _err("--run", "a run directory written by training.fit (runs/<name>/)",
                   f"{str(p)!r}, which does not exist" if not p.exists() else f"{str(p)!r}, not a directory", hint)
    cfg = p / "config.json"
    if not cfg.is_file():
        raise _err("--run", "a run directory holding config.json", f"{str(p)!r} without it", hint)
    try:
        from_dict(json.loads(cfg.read_text()))
    except (ValueError, ConfigError) as e:
        raise _err("--run", "a readable config.json", f"{cfg}: {e}", "retrain the run, or fix the file") from None
    ck = p / "checkpoints" / which
    if not ck.is_dir() or not any(ck.iterdir()):
        other = "latest" if which == "best" else "best"
        raise _err("--run", f"a checkpoint in {ck}", "none", f"train longer, or pass --checkpoint {other}")
    return p


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, so the proxy's gradient compiles once per machine (and
    per proxy version), not once per run: ``$SYNTHPROG_JAX_CACHE`` (``off`` disables it), default
    ``~/.cache/synthprog/jax``. A cache directory already configured (``JAX_COMPILATION_CACHE_DIR``)
    is left as it is."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if jax.config.jax_compilation_cache_dir:
        return
    path = os.environ.get("SYNTHPROG_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "synthprog", "jax"))
    if not path or path.lower() in ("0", "off", "none"):
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    compilation_cache.reset_cache()  # a process that compiled before now uses it too


def run_synth(run: str | os.PathLike):
    """The synth a run directory was trained on (from its config.json; no JAX)."""
    from proxies.synth import get_synth

    data = json.loads((Path(run) / "config.json").read_text()).get("data", {})
    return get_synth(data.get("synth", "amsynth"), data.get("spec") or None)


