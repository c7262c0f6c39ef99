"""The model zoo: NF-ResNets, NFNets and their BatchNorm twins, by registered name.

Example:
    >>> from study.models import build_model, model_info, twin_name
    >>> model = build_model("nf_resnet_small", num_classes=10, in_chans=1)
    >>> model.get_classifier().out_features
    10
    >>> twin_name("nf_resnet_small", "bn"), model_info("bn_resnet_small").norm
    ('bn_resnet_small', 'bn')
"""

from study.models import nf_resnet, nfnet, resnet  # noqa: F401  (registers the models)
from study.models._registry import (
    NORMS,
    InputDefaults,
    ModelInfo,
    build_model,
    input_defaults,
    known_model,
    list_models,
    model_info,
    register_model,
    twin_name,
    twins,
)
from study.models.macs import count_macs
from study.models.nf_resnet import legacy_classifier_init_std
from study.models.spp import signal_propagation

__all__ = ["NORMS", "InputDefaults", "ModelInfo", "build_model", "count_macs", "input_defaults", "known_model",
           "legacy_classifier_init_std", "list_models", "model_info", "register_model", "signal_propagation",
           "twin_name", "twins"]
