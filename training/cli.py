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


#: the file training.fit writes into every run folder it creates: only such folders (and older
#: runs holding config.json and checkpoints/) are ever deleted by ``fit --fresh``
RUN_MARKER = ".synthprog-run"


def is_run_dir(path: str | os.PathLike) -> bool:
    """A folder ``training.fit`` made: it holds :data:`RUN_MARKER`, or (runs from before the
    marker) both config.json and checkpoints/."""
    p = Path(path)
    if not p.is_dir() or p.is_symlink():
        return False
    return (p / RUN_MARKER).is_file() or ((p / "config.json").is_file() and (p / "checkpoints").is_dir())


def read_run_config(p: Path, flag: str = "--run") -> dict:
    """A run's config.json as a dict; MatchError (not a traceback) for a file that is not UTF-8,
    not JSON, or not a valid config."""
    from training.config import ConfigError, from_dict

    cfg = p / "config.json"
    fix = "retrain the run (python -m training.fit), or restore config.json from a backup"
    try:
        raw = json.loads(cfg.read_bytes().decode("utf-8"))
    except OSError as e:
        raise _err(flag, "a readable config.json", f"{cfg} ({e.strerror or e})", "fix the file's permissions") from None
    except UnicodeDecodeError as e:
        raise _err(flag, "a config.json in UTF-8", f"{cfg} with a non-UTF-8 byte at offset {e.start}", fix) from None
    except ValueError as e:
        raise _err(flag, "a config.json holding JSON", f"{cfg}, which does not parse ({e})", fix) from None
    if not isinstance(raw, dict):
        raise _err(flag, "a config.json holding a JSON object", f"{cfg} holding {type(raw).__name__}", fix)
    try:
        from_dict(raw)
    except ConfigError as e:
        raise _err(flag, "a valid config.json", f"{cfg}: {e}", fix) from None
    return raw


def _at_most(flag: str, value: int, hi: int, what: str, fix: str) -> int:
    """``value`` unless it exceeds ``hi`` (an upper bound where a typo costs hours): MatchError."""
    if value > hi:
        raise _err(flag, f"at most {hi:,} {what}", f"{value:,}", fix)
    return value


def check_run_dir(run: str | os.PathLike, which: str = "best", flag: str = "--run") -> Path:
    """The run directory, checked without loading JAX: config.json and a checkpoint exist."""
    p = Path(run)
    hint = "train one with `python -m training.fit --config configs/amsynth.toml` or pass --run runs/<name>"
    if not p.is_dir():
        raise _err(flag, "a run directory written by training.fit (runs/<name>/)",
                   f"{str(p)!r}, which does not exist" if not p.exists() else f"{str(p)!r}, not a directory", hint)
    cfg = p / "config.json"
    if not cfg.is_file():
        raise _err(flag, "a run directory holding config.json", f"{str(p)!r} without it", hint)
    read_run_config(p, flag)
    ck = p / "checkpoints" / which
    try:
        steps = [d for d in ck.iterdir() if d.is_dir() and d.name.isdigit()] if ck.is_dir() else []
    except OSError as e:
        raise _err(flag, f"a readable checkpoint folder {ck}", e.strerror or str(e), "fix its permissions") from None
    if not steps:
        other = "latest" if which == "best" else "best"
        got = "none" if not ck.is_dir() or not any(ck.iterdir()) else "a folder without a numbered step checkpoint"
        raise _err(flag, f"a checkpoint in {ck}", got, f"train longer, or pass --checkpoint {other}")
    return p


def output_path(path: str | os.PathLike, flag: str, create_parents: bool = False,
                suffixes: tuple[str, ...] = ()) -> Path:
    """:func:`proxies.files.check_output_path` with its error as a :class:`MatchError`."""
    from proxies.files import OutputPathError, check_output_path

    try:
        return check_output_path(path, flag, create_parents, suffixes)
    except OutputPathError as e:
        raise MatchError(f"{e}") from None


def run_cli(prog: str, body, argv=None) -> int:
    """End a training command line the one way (:func:`proxies.files.guarded_main`): user errors
    (MatchError, ConfigError, a damaged checkpoint) print one message and exit 2; anything else
    writes its traceback to a log file and says where."""
    from proxies.files import OutputPathError, guarded_main
    from training.config import ConfigError

    return guarded_main(prog, body, (MatchError, ConfigError, OutputPathError), argv, label="error: ")


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
