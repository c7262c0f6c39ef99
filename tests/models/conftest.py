import functools

import pytest
import torch

from study.models import build_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _meta_model(name: str):
    with torch.device("meta"):
        return build_model(name)


@pytest.fixture(scope="session")
def meta_model():
    """``meta_model(name)``: the registered model built on the meta device, once per session."""
    return _meta_model
