"""``model.name: timm/<name>``: any model of timm (PyTorch Image Models) by its timm name,
built with ``timm.create_model`` from random weights (never downloaded).

timm is an optional extra (``pip install 'nfstudy[timm]'``). Its models have
``get_classifier()``, so AGC's ``classifier.weight`` exclusion (Brock et al. 2021, §4.1)
finds their final layer whatever it is called.
"""

from __future__ import annotations

from torch import nn

from study.errors import ConfigError

PREFIX = "timm/"


def is_timm_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def check_timm_name(name: str) -> None:
    """Raise when ``timm/<name>`` cannot be built here (timm missing, or no such model).

    Raises:
        ConfigError: one line naming the extra to install, or the unknown model.
    """
    timm = _timm(name)
    model = name[len(PREFIX):]
    if not timm.is_model(model):
        close = timm.list_models(f"*{model[:4]}*")[:8] if model else []
        raise ConfigError(f"model.name: timm has no model {model!r}" + (f"; close: {', '.join(close)}" if close
                                                                        else "; see timm.list_models()"))


def build_timm(name: str, *, num_classes: int, in_chans: int = 3, dropout: float | None = None,
               stochastic_depth: float | None = None, classifier_init_std: float | None = None) -> nn.Module:
    """``timm.create_model`` for ``timm/<name>``, random weights; ``dropout`` and
    ``stochastic_depth`` map to timm's ``drop_rate`` and ``drop_path_rate`` (``None``: timm's
    default), ``classifier_init_std`` re-initialises ``get_classifier()`` as N(0, std²), bias 0
    (``None``: timm's init)."""
    check_timm_name(name)
    timm = _timm(name)
    options = {"drop_rate": dropout, "drop_path_rate": stochastic_depth}
    model = timm.create_model(name[len(PREFIX):], pretrained=False, num_classes=num_classes, in_chans=in_chans,
                              **{key: value for key, value in options.items() if value is not None})
    head = model.get_classifier()
    if classifier_init_std is not None and isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=classifier_init_std)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    return model


def _timm(name: str):
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.name={name} needs timm, an optional extra: pip install 'nfstudy[timm]'") from None
    return timm
