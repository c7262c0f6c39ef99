"""The model zoo: NF-ResNets, NFNets and their BatchNorm twins, by registered name.

Example:
    >>> from study.models import build_model, list_models
    >>> model = build_model("nf_resnet_small", num_classes=10, in_chans=1)
    >>> model.get_classifier().out_features
    10
"""

from study.models import nf_resnet, nfnet, resnet  # noqa: F401  (registers the models)
from study.models._registry import InputDefaults, build_model, input_defaults, list_models, register_model
from study.models.macs import count_macs
from study.models.spp import signal_propagation

__all__ = ["InputDefaults", "build_model", "count_macs", "input_defaults", "list_models", "register_model",
           "signal_propagation"]
