"""atomate2's own force-field flows (phonons, elastic, QHA, Grüneisen, NEB, ...) run with GPTFF,
every static and relaxation document carrying the ``gptff`` provenance block.

atomate2 0.1.5 records nothing of a calculator in its documents but the class name
(``forcefield_name: "GPTFFCalculator"``, ``forcefield_version: None``): a flow built with
``SomeMaker.from_force_field_name(*gptff_force_field(...))`` cannot say afterwards which network,
dtype or smooth setting made it. :func:`gptff_flow_maker` builds the same Maker and swaps each of
atomate2's ``ForceFieldStaticMaker`` / ``ForceFieldRelaxMaker`` inside it (at any depth: QHA's
phonon Maker included) for :class:`~gptff_flows.jobs.GPTFFStaticMaker` /
:class:`~gptff_flows.jobs.GPTFFRelaxMaker` with the same settings, whose documents add
``gptff`` (:class:`~gptff_flows.schemas.GPTFFProvenance`: model, checkpoint sha256, dtype, smooth,
device, read from the calculator that ran). The flows' summary documents (``PhononBSDOSDoc``,
``ElasticDocument``, ``NebResult``) have no field for it in atomate2 0.1.5; they are made from
these task documents, which the store keeps beside them.
"""

from __future__ import annotations

import dataclasses

from atomate2.forcefields.jobs import ForceFieldRelaxMaker, ForceFieldStaticMaker
from jobflow import Maker

from gptff_core.pretrained import DEFAULT_MODEL
from gptff_flows.jobs.force_field import GPTFFRelaxMaker, GPTFFStaticMaker, gptff_force_field

_GPTFF_VERSIONS = {ForceFieldStaticMaker: GPTFFStaticMaker, ForceFieldRelaxMaker: GPTFFRelaxMaker}
_SET_BY_GPTFF = ("force_field_name", "calculator_meta", "calculator_kwargs", "task_document_kwargs")


def gptff_flow_maker(
    maker_class: type[Maker],
    model: str = DEFAULT_MODEL,
    dtype: str = "float32",
    smooth: bool | None = None,
    device: str = "cpu",
    calculator_kwargs: dict | None = None,
    **kwargs,
) -> Maker:
    """``maker_class.from_force_field_name`` with GPTFF, its static and relax Makers GPTFF's.

    Args:
        maker_class: an atomate2 force-field flow Maker with ``from_force_field_name``
            (``PhononMaker``, ``ElasticMaker``, ``GruneisenMaker`` ``QhaMaker``,
            ``ForceFieldNebFromEndpointsMaker``, ...).
        model, dtype, smooth, device: as :func:`~gptff_flows.jobs.gptff_force_field`.
        calculator_kwargs: further calculator arguments, e.g. ``{"skin": 1.0}`` (Å).
        **kwargs: the Maker's own arguments (``min_length`` Å, ``use_symmetrized_structure``...).

    Raises:
        GPTFFInputError: a model, dtype, smooth flag or device GPTFF does not accept.
    """
    spec = gptff_force_field(model, dtype, smooth, device, **(calculator_kwargs or {}))
    maker = maker_class.from_force_field_name(*spec, **kwargs)
    return with_gptff_makers(maker)


def with_gptff_makers(maker: Maker) -> Maker:
    """``maker`` with every atomate2 ``ForceFieldStaticMaker``/``ForceFieldRelaxMaker`` among its
    fields (recursively) replaced by the GPTFF Maker with the same settings; ``maker`` itself is
    left unchanged."""
    gptff_class = _GPTFF_VERSIONS.get(type(maker))
    if gptff_class is not None:
        return _as_gptff(maker, gptff_class)
    if not dataclasses.is_dataclass(maker):
        return maker
    changes = {}
    for item in dataclasses.fields(maker):
        value = getattr(maker, item.name, None)
        if isinstance(value, Maker):
            new = with_gptff_makers(value)
            if new is not value:
                changes[item.name] = new
    return dataclasses.replace(maker, **changes) if changes else maker


def _as_gptff(maker: Maker, gptff_class: type[Maker]) -> Maker:
    """The GPTFF Maker ``gptff_class`` with ``maker``'s fields; the calculator's settings come
    from its ``calculator_kwargs`` (model, dtype, smooth, device; the rest stay kwargs)."""
    kwargs = dict(maker.calculator_kwargs)
    options = {k: kwargs.pop(k) for k in ("model", "dtype", "smooth", "device") if k in kwargs}
    fields = {
        item.name: getattr(maker, item.name)
        for item in dataclasses.fields(maker)
        if item.init and item.name not in _SET_BY_GPTFF
    }
    return gptff_class(**fields, **options, calculator_kwargs=kwargs)
