"""Running one training on several processes (``torchrun``): who this process is, and the few collective steps the
loop needs. gloo on CPUs, nccl on GPUs; a single process needs none of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the run.

    Attributes:
        rank: its number, 0 … size − 1 (0 writes the files).
        size: the number of processes.
        local_rank: its number on this machine (its GPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes checkpoints, logs and the plot."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.size > 1


def join(device: str) -> World:
    """Join the process group that ``torchrun`` set up (``WORLD_SIZE`` > 1 in the environment), or stay alone.

    Args:
        device: ``cpu`` (gloo) or ``cuda`` (nccl; each process takes the GPU of its local rank).

    Returns:
        This process's place.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return world


def leave(world: World) -> None:
    """Leave the process group (after training, or when it stopped), all processes together.

    The barrier first: a process that tore its gloo connections down while its peer was still writing the last
    checkpoint was once aborted ("terminate called without an active exception") in a full test run.
    """
    if world.distributed and dist.is_initialized():
        try:
            dist.barrier()
        except (RuntimeError, ValueError):  # a peer already gone: torchrun ends the run anyway
            pass
        dist.destroy_process_group()


def total(values: list[float], world: World, device: torch.device) -> list[float]:
    """The sums of ``values`` over all processes (float64)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def anyone(flag: bool, world: World, device: torch.device) -> bool:
    """Whether any process raised ``flag`` (a Ctrl-C reaches each process of a run)."""
    if not world.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def wait(world: World) -> None:
    """Wait until every process got here (while the main one validates and writes)."""
    if world.distributed:
        dist.barrier()


__all__ = ["World", "join", "leave", "total", "anyone", "wait"]
