"""Fixtures of the data tests."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _HostData(TorchDispatchMode):
    """Records every tensor made from Python data (``torch.tensor(x)``: on a GPU a host-to-
    device copy and a sync), and on the meta device every tensor off it and every read-back."""

    _FROM_HOST = (torch.ops.aten.lift_fresh.default, torch.ops.aten.lift_fresh_copy.default)

    def __init__(self, device: str):
        super().__init__()
        self.device, self.seen = device, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_leaves((args, kwargs or {}, out)) if isinstance(t, torch.Tensor)]
        off_device = self.device == "meta" and (any(t.device.type != "meta" for t in tensors)
                                                or func is torch.ops.aten._local_scalar_dense.default)
        if func in self._FROM_HOST or off_device:
            self.seen.append(str(func))
        return out


@pytest.fixture
def host_data():
    """``with host_data("cpu") as mode: ...; assert mode.seen == []``: no tensor made from
    Python data in the block (on the meta device: nothing off the device, no read-back)."""
    return _HostData
