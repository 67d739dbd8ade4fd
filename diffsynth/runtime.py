"""Process settings that make the JAX proxies fast on CPU, applied in one place.

Two settings change no output (bit for bit) and only the speed of the per-sample loops:

* **XLA option** ``xla_cpu_small_while_loop_byte_threshold=1000000000`` (in ``XLA_FLAGS``,
  as ``--xla_backend_extra_options=...``): XLA:CPU compiles every ``while`` loop (each
  ``lax.scan`` over samples) as one kernel instead of dispatching its body op by op from
  the runtime. XLA reads ``XLA_FLAGS`` when the JAX backend starts (the first computation,
  not ``import jax``), so :func:`configure_xla` must run before that: ``import diffsynth``
  calls it, and so does ``tests/conftest.py``.
* **glibc malloc tunable** ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35):
  malloc backs its arenas with transparent huge pages, which removes most page faults of
  XLA's large, short-lived buffers (measured 1.69 M -> ~4 k faults per gradient call). glibc
  reads it when the process starts, so it must be in the environment of the interpreter:
  ``.ci/run`` exports it, and a CLI re-executes itself once with it
  (:func:`reexec_with_tunables`, in its ``if __name__ == "__main__":`` block).

A third gives the per-sample loops more cores, without changing what one device computes:

* **one XLA:CPU device per core** (``--xla_force_host_platform_device_count=N``, ``N`` the
  usable cores rounded down to a power of two, at most :data:`MAX_HOST_DEVICES`; not set on
  one core). A ``lax.scan`` over samples runs on one core, whatever the batch, so a batch
  split over the devices (:mod:`diffsynth.parallel`; the training mesh, ``[run] devices = 0``)
  runs its halves side by side: on 2 cores the amsynth proxy's forward 1.6-1.7x and its
  spectral-loss gradient 1.4-1.6x faster (``benchmarks/proxy.py``). A computation on one
  device is unchanged, and a split batch gives bit for bit what each device's rows give as a
  batch of their own (``tests/test_parallel.py``).

A user's own settings win: an ``XLA_FLAGS`` that already names an option or the device count
keeps it, and a set ``GLIBC_TUNABLES`` (any value, even empty) disables the re-exec.
``DIFFSYNTH_RUNTIME=0`` in the environment turns all three off.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from typing import MutableMapping, Sequence

__all__ = [
    "XLA_OPTION",
    "XLA_OPTION_VALUE",
    "HOST_DEVICES_FLAG",
    "MAX_HOST_DEVICES",
    "host_device_count",
    "xla_flags_with_devices",
    "MALLOC_TUNABLE",
    "REEXEC_MARKER",
    "xla_flags_with_option",
    "configure_xla",
    "tuned_environment",
    "reexec_with_tunables",
]

#: The XLA:CPU backend option (name) and the value we set.
XLA_OPTION = "xla_cpu_small_while_loop_byte_threshold"
XLA_OPTION_VALUE = "1000000000"
#: The XLA flag that splits the CPU into several devices, and their most.
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"
MAX_HOST_DEVICES = 8
#: The glibc tunable (``GLIBC_TUNABLES`` value).
MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"
#: Set in the environment of the re-executed interpreter (guards against exec loops).
REEXEC_MARKER = "DIFFSYNTH_REEXECED"
#: ``DIFFSYNTH_RUNTIME=0``: apply neither setting.
OPT_OUT = "DIFFSYNTH_RUNTIME"

_EXTRA = "--xla_backend_extra_options"


def _opted_out(environ) -> bool:
    return environ.get(OPT_OUT, "").strip().lower() in ("0", "false", "no", "off")


def xla_flags_with_option(flags: str | None) -> str:
    """``flags`` (an ``XLA_FLAGS`` value) with our backend option added, unless it names it.

    The option joins the last ``--xla_backend_extra_options=`` flag already there (its value
    is a comma-separated ``key=value`` list), else it is appended as a new flag.
    """
    flags = (flags or "").strip()
    if XLA_OPTION in flags:
        return flags
    ours = f"{XLA_OPTION}={XLA_OPTION_VALUE}"
    matches = list(re.finditer(rf"{_EXTRA}=(\S*)", flags))
    if matches:
        m = matches[-1]
        value = m.group(1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":  # a quoted list
            inner = value[1:-1]
            value = value[0] + (inner + "," if inner else "") + ours + value[0]
        else:
            value = (value + "," if value else "") + ours
        return flags[:m.start(1)] + value + flags[m.end(1):]
    return f"{flags} {_EXTRA}={ours}".strip()


def _backend_started() -> bool:
    """Whether a JAX backend already exists in this process (XLA_FLAGS was read then)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # noqa: PLC0415

        return bool(getattr(xla_bridge, "_backends", {}))
    except Exception:  # pragma: no cover - private API moved: assume not started
        return False


def host_device_count(cores: int | None = None) -> int:
    """CPU devices to ask XLA for: the usable cores (``cores``, default this process's CPU
    affinity) rounded down to a power of two (batch sizes are), at most :data:`MAX_HOST_DEVICES`."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
    n = 1
    while n * 2 <= min(int(cores), MAX_HOST_DEVICES):
        n *= 2
    return n


def xla_flags_with_devices(flags: str | None, cores: int | None = None) -> str:
    """``flags`` with :data:`HOST_DEVICES_FLAG` added (:func:`host_device_count` devices),
    unless it names the flag already or there is one core."""
    flags = (flags or "").strip()
    n = host_device_count(cores)
    if HOST_DEVICES_FLAG in flags or n <= 1:
        return flags
    return f"{flags} {HOST_DEVICES_FLAG}={n}".strip()


def configure_xla(environ: MutableMapping[str, str] | None = None, *, warn: bool = True) -> bool:
    """Add our XLA:CPU option and device count to ``XLA_FLAGS`` (see the module docstring).
    Idempotent.

    Must run before this process's first JAX computation. Returns True if the option is in
    effect for the next backend start (set now or before, by us or the user), False if it
    cannot take effect (opted out; or a backend already started, with a warning, when
    ``environ`` is this process's environment; ``warn=False`` silences the warning).
    """
    env = os.environ if environ is None else environ
    if _opted_out(env):
        return False
    before = env.get("XLA_FLAGS")
    after = xla_flags_with_devices(xla_flags_with_option(before))
    if before is not None and after == before.strip():
        return True
    env["XLA_FLAGS"] = after
    if environ is None and _backend_started():
        if warn:
            warnings.warn("diffsynth.runtime.configure_xla() ran after JAX started its backend: the XLA settings "
                          f"({XLA_OPTION}, {HOST_DEVICES_FLAG}) take no effect in this process (call it before "
                          "the first JAX computation)", RuntimeWarning, stacklevel=2)
        return False
    return True


def _glibc_supports_hugetlb() -> bool:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = (int(v) for v in version.split(".")[:2])
    except (AttributeError, ValueError, OSError, TypeError):
        return False
    return name == "glibc" and (major, minor) >= (2, 35)


def tuned_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: this process's) with both settings applied as a child
    process would need them (user values kept; nothing added when opted out)."""
    env = dict(os.environ if environ is None else environ)
    if _opted_out(env):
        return env
    configure_xla(env)
    if "GLIBC_TUNABLES" not in env and _glibc_supports_hugetlb():
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLE
    return env


def reexec_with_tunables(argv: Sequence[str] | None = None) -> None:
    """Re-execute this interpreter once with ``GLIBC_TUNABLES`` set (and ``XLA_FLAGS``).

    Call it first thing in a CLI's ``if __name__ == "__main__":`` block. It returns (does
    nothing) when the user set ``GLIBC_TUNABLES`` (any value), when this process already is the
    re-executed one (``DIFFSYNTH_REEXECED`` in the environment), when opted out
    (``DIFFSYNTH_RUNTIME=0``), when glibc is older than 2.35 or absent, or when the command
    line cannot be replayed (interactive session, script from stdin). Otherwise it does not
    return: ``os.execve`` replaces the process with the same command line.

    Args:
      argv: the full command line to run, interpreter first; default ``sys.orig_argv`` (the
        interpreter's own command line, with its options and ``-m module``).
    """
    env = os.environ
    if _opted_out(env) or REEXEC_MARKER in env or "GLIBC_TUNABLES" in env:
        return
    if not _glibc_supports_hugetlb() or not sys.executable:
        return
    if argv is None:
        argv = list(getattr(sys, "orig_argv", []))
        if not argv:
            return
        argv[0] = sys.executable
    argv = [str(a) for a in argv]
    if sys.flags.interactive or len(argv) < 2 or argv[1] == "-" or "-i" in argv[1:2]:
        return
    new_env = tuned_environment(env)
    new_env[REEXEC_MARKER] = "1"
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover
            pass
    try:
        os.execve(sys.executable, argv, new_env)
    except OSError:  # pragma: no cover - exec refused: run as we are
        return
