"""This process's place among the replicas of one run: rank, world size, device.

Outside ``torchrun`` a run is one process (:class:`World` of size 1, every method a no-op);
under ``torchrun`` (:mod:`study.train.ddp`) each rank trains its slice of the global batch.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from study.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the replicas of one run (size 1 outside ``torchrun``)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    distributed: bool = False
    """A process group exists (``torchrun``): DDP and collectives, even with one rank."""

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda:<local rank>`` under DDP on CUDA, else ``device``."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def local_batch_size(self, global_batch_size: int) -> int:
        """Rows of each global batch that this rank trains on.

        Raises:
            ConfigError: the global batch does not split evenly over the ranks.
        """
        if global_batch_size % self.size:
            raise ConfigError(f"data.batch_size: got a batch of {global_batch_size} drawn per step for "
                              f"{self.size} processes; allowed: a multiple of the process count")
        return global_batch_size // self.size

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (the whole batch on one process)."""
        if self.size == 1:
            return batch
        return batch.tensor_split(self.size)[self.rank]

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DDP under ``torchrun`` (rank 0's weights are broadcast); one rank is
        wrapped too, so a one-GPU machine runs the whole DDP path (reducer, NCCL)."""
        if not self.distributed:
            return model
        # DDP copies each gradient into its bucket whatever the gradient's strides, so the
        # values are right either way; with channels_last weights the strides differ only
        # nominally (size-1 dims of 1x1 convolutions, pytorch/pytorch#47163) or by the layout
        # Inductor chose under train.compile, and the warning would fire on every run.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the ranks (``tensor`` itself outside ``torchrun``)."""
        if not self.distributed:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.size

    def agree(self, value: int) -> bool:
        """Whether every rank holds the same ``value`` (always true outside ``torchrun``)."""
        if not self.distributed:
            return True
        both = torch.tensor([value, -value], dtype=torch.int64,
                            device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        return int(both[0]) == -int(both[1])


def world() -> World:
    """The current process's :class:`World`: from the initialised process group, else size 1."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())), distributed=True)
