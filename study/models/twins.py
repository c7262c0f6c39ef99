"""Twins: the BatchNorm and the unscaled (no weight standardisation) partner of each
Normalizer-Free model, found by the registry's naming convention:
``nf_resnet50`` ↔ ``bn_resnet50``, ``nfnet_f0`` ↔ ``bn_nfnet_f0``,
``nf_resnet_small`` ↔ ``nf_resnet_small_nows`` (``model.norm`` = nf | bn | nf_plain)."""

from __future__ import annotations

from study.errors import ConfigError


def _nf_name(name: str) -> str:
    name = name.removesuffix("_nows")
    if name.startswith("bn_nfnet"):
        return name.removeprefix("bn_")
    if name.startswith("bn_"):
        return "nf_" + name.removeprefix("bn_")
    return name


def twin_name(name: str, norm: str) -> str:
    """The registered name of ``name``'s twin of kind ``norm`` (``nf``, ``bn``, ``nf_plain``).

    Raises:
        ConfigError: the model has no such twin registered.
    """
    from study.models import list_models

    nf = _nf_name(name)
    if norm == "nf":
        twin = nf
    elif norm == "bn":
        twin = "bn_" + nf.removeprefix("nf_") if nf.startswith("nf_") else "bn_" + nf
    elif norm == "nf_plain":
        twin = nf + "_nows"
    else:
        raise ConfigError(f"model.norm: unknown value {norm!r}; allowed: nf, bn, nf_plain")
    if twin not in list_models():
        raise ConfigError(f"model.norm={norm}: model '{name}' has no such twin ('{twin}' is not registered)")
    return twin
