"""Optimisation: AGC (Brock et al. 2021 §4), SAM (§5), Nesterov SGD with its schedule and EMA."""

from study.optim.agc import AGC, adaptive_grad_clip_, agc_parameters
from study.optim.ema import EMA
from study.optim.sam import SAM
from study.optim.sgd import build_optimizer, lr_at, param_groups

__all__ = ["AGC", "EMA", "SAM", "adaptive_grad_clip_", "agc_parameters", "build_optimizer",
           "lr_at", "param_groups"]
