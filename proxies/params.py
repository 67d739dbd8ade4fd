"""A synth's parameters, described once, as data.

Three value spaces are kept apart (see ``shared/design.md``):

* ``normalized`` ``n`` in [0, 1]: what a plugin host sets (``set_parameter``) and what a VST2
  ``FxCk`` .fxp stores.
* ``internal`` ``v`` in [minimum, maximum]: what preset/bank text files store; stepped
  parameters are snapped to their grid.
* ``control`` ``cv = law(v)``: what the synth's DSP receives and what the plugin displays as
  parameter text (seconds, Hz, gain factors, ...).

Every conversion below is vectorised over a trailing parameter axis (``[..., n_params]``) and
works with NumPy (``xp=np``, float32 arithmetic that reproduces the plugin's own float32
rounding) and with JAX (``xp=jax.numpy``, differentiable except through the step snapping).
Sampling, model heads, calibration and preset writers all derive from these declarations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

Law = Literal["linear", "exponential", "power"]
Prior = Literal["uniform", "fixed"]


@dataclass(frozen=True)
class ParamSpec:
    """One plugin parameter.

    Attributes:
        name: the plugin's own parameter name (as in its preset files).
        index: plugin parameter index (``set_parameter(index, n)``).
        minimum, maximum: internal value range.
        step: internal grid step; 0 for continuous parameters.
        law: internal -> control law: ``linear`` cv = offset + base*v, ``exponential``
            cv = offset + base**v, ``power`` cv = offset + v**base (computed in float64, then
            rounded to float32, as the plugin does).
        base, offset: constants of the law.
        unit: unit of the control value ("s", "Hz", "" ...).
        default: default internal value.
        choices: names of the categories for categorical (stepped, unordered) parameters.
        prior: how random presets sample it: ``uniform`` over [0, 1] normalized (categoricals:
            uniform over choices), or ``fixed`` (always the default; excluded from learning).
        description: one line for humans (what the control value means physically).
    """

    name: str
    index: int
    minimum: float
    maximum: float
    step: float = 0.0
    law: Law = "linear"
    base: float = 1.0
    offset: float = 0.0
    unit: str = ""
    default: float = 0.0
    choices: tuple[str, ...] | None = None
    prior: Prior = "uniform"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.maximum > self.minimum:
            raise ValueError(f"{self.name}: maximum {self.maximum} must exceed minimum {self.minimum}")
        if self.law not in ("linear", "exponential", "power"):
            raise ValueError(f"{self.name}: unknown law {self.law!r}; expected linear, exponential or power")
        if self.choices is not None and len(self.choices) != self.n_steps + 1:
            raise ValueError(
                f"{self.name}: {len(self.choices)} choices but the step grid has {self.n_steps + 1} values"
            )
        if not self.minimum <= self.default <= self.maximum:
            raise ValueError(f"{self.name}: default {self.default} outside [{self.minimum}, {self.maximum}]")

    @property
    def span(self) -> float:
        return self.maximum - self.minimum

    @property
    def is_stepped(self) -> bool:
        return self.step > 0

    @property
    def is_categorical(self) -> bool:
        return self.choices is not None

    @property
    def n_steps(self) -> int:
        """Number of grid intervals (values - 1) of a stepped parameter, 0 if continuous."""
        return int(round(self.span / self.step)) if self.step > 0 else 0

    @property
    def default_normalized(self) -> float:
        return (self.default - self.minimum) / self.span


def _round_half_away(x: Any, xp: Any) -> Any:
    """C ``roundf``: halves round away from zero (unlike NumPy's banker's rounding)."""
    return xp.sign(x) * xp.floor(xp.abs(x) + 0.5)


@dataclass(frozen=True)
class SynthSpec:
    """All parameters of one synth, in plugin index order, with vectorised conversions."""

    name: str
    params: tuple[ParamSpec, ...]
    _by_name: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for i, p in enumerate(self.params):
            if p.index != i:
                raise ValueError(f"{self.name}: parameter {p.name!r} has index {p.index}, expected {i}")
        by_name = {p.name: i for i, p in enumerate(self.params)}
        if len(by_name) != len(self.params):
            raise ValueError(f"{self.name}: duplicate parameter names")
        object.__setattr__(self, "_by_name", by_name)

    # ----------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self):
        return iter(self.params)

    def __getitem__(self, key: int | str) -> ParamSpec:
        return self.params[self.index_of(key) if isinstance(key, str) else key]

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def index_of(self, name: str) -> int:
        """Plugin index of ``name``; a clear error for unknown names."""
        try:
            return self._by_name[name]
        except KeyError:
            close = [n for n in self.names if name.lower() in n or n in name.lower()]
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(
                f"{self.name} has no parameter named {name!r}.{hint} Known names: {', '.join(self.names)}"
            ) from None

    def has(self, name: str) -> bool:
        return name in self._by_name

    # ------------------------------------------------------------- arrays
    def _array(self, attr: str) -> np.ndarray:
        return np.array([getattr(p, attr) for p in self.params], dtype=np.float64)

    @property
    def minimum(self) -> np.ndarray:
        return self._array("minimum")

    @property
    def maximum(self) -> np.ndarray:
        return self._array("maximum")

    @property
    def step(self) -> np.ndarray:
        return self._array("step")

    @property
    def defaults_internal(self) -> np.ndarray:
        return self._array("default")

    @property
    def defaults_normalized(self) -> np.ndarray:
        return np.array([p.default_normalized for p in self.params], dtype=np.float64)

    @property
    def categorical_indices(self) -> tuple[int, ...]:
        return tuple(i for i, p in enumerate(self.params) if p.is_categorical)

    @property
    def continuous_indices(self) -> tuple[int, ...]:
        return tuple(i for i, p in enumerate(self.params) if not p.is_categorical)

    @property
    def learned_indices(self) -> tuple[int, ...]:
        """Parameters with a non-fixed prior (the ones a model predicts)."""
        return tuple(i for i, p in enumerate(self.params) if p.prior != "fixed")

    # -------------------------------------------------------- conversions
    def normalized_to_internal(self, normalized: Any, xp: Any = np) -> Any:
        """Normalized [0,1] -> internal values, as the plugin computes them.

        ``v = n*(max-min)+min`` in float32, clamped, then snapped to the step grid with C
        ``roundf``. With ``xp=jax.numpy`` the snap has zero gradient; use
        :meth:`normalized_to_internal_continuous` where gradients must flow.
        """
        n = xp.asarray(normalized, dtype=xp.float32)
        self._check_last_axis(n)
        lo = xp.asarray(self.minimum, dtype=xp.float32)
        hi = xp.asarray(self.maximum, dtype=xp.float32)
        st = xp.asarray(self.step, dtype=xp.float32)
        v = xp.clip(n * (hi - lo) + lo, lo, hi)
        safe_step = xp.where(st > 0, st, xp.ones_like(st))
        snapped = lo + _round_half_away((v - lo) / safe_step, xp) * safe_step
        return xp.where(st > 0, snapped, v)

    def normalized_to_internal_continuous(self, normalized: Any, xp: Any = np) -> Any:
        """The linear map without clamping or snapping (smooth; for relaxed proxies)."""
        n = xp.asarray(normalized, dtype=xp.float32)
        self._check_last_axis(n)
        lo = xp.asarray(self.minimum, dtype=xp.float32)
        hi = xp.asarray(self.maximum, dtype=xp.float32)
        return n * (hi - lo) + lo

    def internal_to_normalized(self, internal: Any, xp: Any = np) -> Any:
        """Internal -> normalized: ``(v - min) / (max - min)`` (what the plugin reports back)."""
        v = xp.asarray(internal)
        self._check_last_axis(v)
        lo = xp.asarray(self.minimum, dtype=v.dtype if v.dtype.kind == "f" else xp.float64)
        hi = xp.asarray(self.maximum, dtype=lo.dtype)
        return (v - lo) / (hi - lo)

    def internal_to_control(self, internal: Any, xp: Any = np) -> Any:
        """Internal -> control value (the DSP's input and the plugin's display text).

        NumPy: float64 law then float32 rounding, exactly like the plugin. JAX: float32 law,
        differentiable; ``power`` laws use a gradient-safe form at v = 0.
        """
        v = xp.asarray(internal)
        self._check_last_axis(v)
        law = [p.law for p in self.params]
        base = np.array([p.base for p in self.params])
        offset = np.array([p.offset for p in self.params])
        is_exp = np.array([l == "exponential" for l in law])
        is_pow = np.array([l == "power" for l in law])
        if xp is np:
            v64 = v.astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                lin = offset + base * v64
                exp = offset + np.power(base, v64)
                pw = offset + np.power(v64, base)
            cv = np.where(is_exp, exp, np.where(is_pow, pw, lin))
            return cv.astype(np.float32)
        v = v.astype(xp.float32)
        b = xp.asarray(base, dtype=xp.float32)
        o = xp.asarray(offset, dtype=xp.float32)
        lin = o + b * v
        exp = o + xp.exp(v * xp.log(xp.where(is_exp, b, 1.0)))
        # v**b for v >= 0 (all power laws here have v >= 0); the double-where keeps the
        # gradient finite at v = 0.
        v_safe = xp.where(v > 0, v, 1.0)
        pw = o + xp.where(v > 0, xp.exp(b * xp.log(v_safe)), 0.0)
        return xp.where(is_exp, exp, xp.where(is_pow, pw, lin))

    def normalized_to_control(self, normalized: Any, xp: Any = np) -> Any:
        return self.internal_to_control(self.normalized_to_internal(normalized, xp), xp)

    def snap_normalized(self, normalized: Any, xp: Any = np) -> Any:
        """Normalized values moved onto the plugin's grid (what the plugin would report)."""
        return self.internal_to_normalized(self.normalized_to_internal(normalized, xp), xp)

    def category_of(self, normalized: Any, xp: Any = np) -> Any:
        """Integer choice index of every parameter (stepped ones; continuous ones give 0)."""
        v = self.normalized_to_internal(normalized, xp)
        lo = xp.asarray(self.minimum, dtype=xp.float32)
        st = xp.asarray(np.where(self.step > 0, self.step, 1.0), dtype=xp.float32)
        return xp.where(xp.asarray(self.step) > 0, xp.round((v - lo) / st), 0).astype(xp.int32)

    def choice_to_normalized(self, name: str, choice: int | str) -> float:
        """Normalized value selecting a categorical choice (the grid point, not a threshold)."""
        p = self[name]
        if not p.is_stepped:
            raise ValueError(f"{name} is continuous; it has no choices")
        k = p.choices.index(choice) if isinstance(choice, str) and p.choices else int(choice)
        if not 0 <= k <= p.n_steps:
            raise ValueError(f"{name}: choice {choice!r} out of range 0..{p.n_steps}")
        return k / p.n_steps

    # -------------------------------------------------------------- checks
    def check_normalized(self, normalized: Any, source: str = "input") -> np.ndarray:
        """Validate a [..., n_params] array of normalized values; clear errors, no clipping."""
        n = np.asarray(normalized, dtype=np.float64)
        self._check_last_axis(n)
        bad = ~np.isfinite(n)
        if bad.any():
            i = int(np.argwhere(bad)[0][-1])
            raise ValueError(f"{source}: parameter {self.params[i].name!r} is not finite (NaN or inf)")
        out = (n < 0) | (n > 1)
        if out.any():
            i = int(np.argwhere(out)[0][-1])
            raise ValueError(
                f"{source}: parameter {self.params[i].name!r} normalized value {float(n[np.nonzero(out)][0])!r} "
                "is outside [0, 1]; normalized values must lie in [0, 1]"
            )
        return n

    def check_internal(self, internal: Any, source: str = "input") -> np.ndarray:
        """Validate internal values against [minimum, maximum] (small float slack allowed)."""
        v = np.asarray(internal, dtype=np.float64)
        self._check_last_axis(v)
        for i, p in enumerate(self.params):
            x = v[..., i]
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{source}: parameter {p.name!r} is not finite")
            tol = 1e-6 * max(1.0, p.span)
            if np.any(x < p.minimum - tol) or np.any(x > p.maximum + tol):
                bad = float(x[(x < p.minimum - tol) | (x > p.maximum + tol)].ravel()[0])
                raise ValueError(
                    f"{source}: parameter {p.name!r} value {bad!r} is outside its range "
                    f"[{p.minimum:g}, {p.maximum:g}]"
                )
        return v

    def _check_last_axis(self, x: Any) -> None:
        shape = getattr(x, "shape", ())
        if not shape or shape[-1] != self.n_params:
            raise ValueError(
                f"{self.name}: expected an array whose last axis holds {self.n_params} parameters, got shape {shape}"
            )

    # ------------------------------------------------------------- sampling
    def sample_normalized(
        self,
        rng: np.random.Generator,
        n: int,
        frozen: dict[str, float] | None = None,
    ) -> np.ndarray:
        """``n`` random presets from the declared priors, as snapped normalized values.

        Continuous parameters are uniform in [0, 1] normalized; stepped ones uniform over their
        grid values; ``fixed`` parameters and those in ``frozen`` (name -> normalized value)
        take that value. Returns float64 ``[n, n_params]``.
        """
        frozen = dict(frozen or {})
        for name in frozen:
            self.index_of(name)
        out = np.empty((n, self.n_params), dtype=np.float64)
        for i, p in enumerate(self.params):
            if p.name in frozen:
                out[:, i] = frozen[p.name]
            elif p.prior == "fixed":
                out[:, i] = p.default_normalized
            elif p.is_stepped:
                out[:, i] = rng.integers(0, p.n_steps + 1, size=n) / p.n_steps
            else:
                out[:, i] = rng.random(n)
        return out

    def replace(self, name: str, **changes: Any) -> "SynthSpec":
        """A copy with one parameter's declaration changed (e.g. its prior)."""
        i = self.index_of(name)
        params = list(self.params)
        params[i] = dataclasses.replace(params[i], **changes)
        return SynthSpec(self.name, tuple(params))

    def table(self) -> list[dict[str, Any]]:
        """The declarations as plain dicts (for docs, JSON and config checks)."""
        return [dataclasses.asdict(p) for p in self.params]


def format_value(x: float) -> str:
    """A float as text with 9 significant digits: enough to round-trip float32 exactly."""
    return f"{float(x):.9g}"


def as_names(spec: SynthSpec, names: Sequence[str]) -> tuple[int, ...]:
    """Plugin indices of ``names`` (clear error on unknown names)."""
    return tuple(spec.index_of(n) for n in names)
