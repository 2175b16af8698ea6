"""What every GPTFF Maker shares: the network's fields, their checks, and value validators.

:class:`GPTFFOptions` holds ``model``, ``dtype``, ``smooth``, ``device``, ``dispersion`` and
``calculator_kwargs``;
every Maker of :mod:`gptff_flows` inherits it, so the fields, their documentation and their checks
are written once. They are keyword-only; a Maker that changes a default redeclares the field
keyword-only too (``smooth: bool | None = field(default=False, kw_only=True)``). The validators
(:func:`require_number`, :func:`require_int`) raise :class:`~gptff_core.errors.GPTFFInputError`
messages that name the field, the unit and the value.

Paths given to a Maker are resolved when the Maker is built, in the caller's working directory
(:func:`absolute_dir`): jobs run elsewhere (``run_flow``'s temporary directory, a cluster node),
so a relative path would otherwise name a directory that is deleted or never seen.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from gptff_core.devices import check_device_name
from gptff_core.errors import GPTFFInputError
from gptff_core.pretrained import DEFAULT_MODEL

DTYPES = ("float32", "float64")
"""Floating-point precisions the network runs in."""


def check_gptff_options(model: object, dtype: object, smooth: object, device: object) -> None:
    """Refuse a model, dtype, smooth flag or device GPTFF does not accept (the message names the
    field and says what it takes)."""
    if not isinstance(model, str | os.PathLike) or not str(model).strip():
        raise GPTFFInputError(f"model must be a registry name or checkpoint path, got {model!r}")
    if dtype not in DTYPES:
        raise GPTFFInputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if smooth is not None and not isinstance(smooth, bool):
        raise GPTFFInputError(f"smooth must be True, False or None, got {smooth!r}")
    if not isinstance(device, str) or not device:
        raise GPTFFInputError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    check_device_name(device)


@dataclass(kw_only=True)
class GPTFFOptions:
    """The GPTFF fields of every GPTFF Maker (a mix-in; keyword-only, so a Maker's own fields
    keep their positions: ``name`` stays its first positional argument).

    Args:
        model: registry name (``"gptff-v1"``, ``"gptff-v2"``) or checkpoint path.
        dtype: ``"float32"`` or ``"float64"`` (use float64 when comparing energies finely).
        smooth: C² cutoff envelopes; ``None`` keeps the checkpoint's setting (off for the
            published networks).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        dispersion: add D3(BJ) dispersion for PBE (:mod:`gptff_core.dispersion`; needs
            torch-dftd, the ``d3`` extra). Refused by a Maker whose class does not set
            ``supports_dispersion = True`` (one that does not pass it to its calculators yet).
        calculator_kwargs: further :class:`~gptff_core.calculator.GPTFFCalculator` arguments,
            e.g. ``skin=1.0`` (Å) for MD.
    """

    model: str = DEFAULT_MODEL
    dtype: str = "float32"
    smooth: bool | None = None
    device: str = "cpu"
    dispersion: bool = False
    calculator_kwargs: dict = field(default_factory=dict)
    supports_dispersion: ClassVar[bool] = False
    """Whether this Maker passes ``dispersion`` on to every calculator it builds."""

    def check_options(self) -> None:
        """Refuse a bad model, dtype, smooth flag, device (see :func:`check_gptff_options`) or
        dispersion flag."""
        check_gptff_options(self.model, self.dtype, self.smooth, self.device)
        if not isinstance(self.dispersion, bool):
            raise GPTFFInputError(f"dispersion must be True or False, got {self.dispersion!r}")
        if self.dispersion and not self.supports_dispersion:
            raise GPTFFInputError(
                f"dispersion=True is not supported by {type(self).__name__} yet: its jobs would "
                "run without D3; add D3 another way or use a Maker that supports it"
            )

    def check_calculator_kwargs(self, reserved: tuple[str, ...] = ()) -> None:
        """Refuse ``calculator_kwargs`` that are not a dict, or that set one of the fields above
        or a ``reserved`` field of the Maker (e.g. ``skin``): the field would silently win."""
        if not isinstance(self.calculator_kwargs, dict):
            raise GPTFFInputError(
                f"calculator_kwargs must be a dict, got {type(self.calculator_kwargs).__name__}"
            )
        fields = {"model", "dtype", "smooth", "device", "dispersion", *reserved}
        repeated = sorted(fields & set(self.calculator_kwargs))
        if repeated:
            raise GPTFFInputError(
                f"calculator_kwargs sets {', '.join(repeated)}: set the Maker's field instead"
            )

    def calculator_arguments(self) -> dict:
        """Keyword arguments of :class:`~gptff_core.calculator.GPTFFCalculator` (the fields win
        over ``calculator_kwargs``)."""
        fields = dict(model=self.model, dtype=self.dtype, smooth=self.smooth, device=self.device)
        if self.dispersion:  # only when asked: calculators without the option keep working
            fields["dispersion"] = True
        return {**self.calculator_kwargs, **fields}

    def make_calculator(self):
        """A :class:`~gptff_core.calculator.GPTFFCalculator` with these options."""
        from gptff_core.calculator import GPTFFCalculator

        return GPTFFCalculator(**self.calculator_arguments())


def require_number(
    name: str, value: object, unit: str = "", minimum: float = 0.0, inclusive: bool = False
) -> float:
    """``value`` as a float if it is a finite number above ``minimum`` (or equal, with
    ``inclusive``); else :class:`GPTFFInputError` naming ``name`` and ``unit``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= minimum if inclusive else value > minimum)
    if not ok:
        bound = f"{'≥' if inclusive else '>'} {minimum:g}{f' {unit}' if unit else ''}"
        raise GPTFFInputError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def require_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an integer ≥ ``minimum``; else :class:`GPTFFInputError` naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise GPTFFInputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def absolute_dir(path: str | os.PathLike | None) -> str | None:
    """``path`` as an absolute directory name, resolved against the current working directory
    (``~`` expanded); ``None`` stays ``None``."""
    if path is None:
        return None
    return str(Path(path).expanduser().resolve())
