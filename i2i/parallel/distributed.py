"""Several processes training one model, on torchrun and PyTorch's DistributedDataParallel.

torchrun (``python -m torch.distributed.run``) starts one process per device and sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address; :func:`init` joins that group (NCCL on CUDA,
one GPU per process; gloo on the CPU). Everything here is a no-op in a single process, so the
training loop has one code path:

* :class:`ShardedSampler` gives each rank a disjoint share of the same (seed, epoch) permutation:
  rank r of N takes positions r, r+N, r+2N, ..., so its k-th batch of b items holds exactly the
  items at positions r::N of the k-th batch of one process with batch N·b.
* :func:`convert_batchnorm` makes batch statistics cover the items of all ranks (SyncBatchNorm),
  so N processes x batch b train the model one process x batch N·b trains.
* :class:`Replicas` wraps G and D in DDP for the step and averages the gradients of networks that
  losses own (their calls are invisible to DDP).
* :meth:`World.agree`, :meth:`World.mean` and :meth:`World.all` keep the ranks' decisions equal:
  when to stop and save, what is logged, whether a step's loss was finite.
* :class:`Agreement` agrees on the per-step stop and save flags without blocking the step: the
  all-reduce of step k runs in the background and is read after step k+1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from i2i.data.order import EpochSampler, _mix
from i2i.errors import I2IError
from i2i.parallel.launch import launched


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one run (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    #: A gloo group for the small CPU-side agreements, so that they never wait on a GPU stream.
    control: Any = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory: logs, samples, checkpoints, report."""
        return self.rank == 0

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true on every rank if it is true on any (one all-reduce for all of them)."""
        if not self.distributed:
            return tuple(bool(f) for f in flags)
        t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return tuple(bool(v) for v in t.tolist())

    def all(self, flag: bool) -> bool:
        """True only if ``flag`` is true on every rank."""
        return not self.agree(not flag)[0]

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over the ranks (the keys must be the same on every rank)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(t, group=self.control)
        return {k: v / self.size for k, v in zip(keys, t.tolist(), strict=True)}

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for paths and resume state)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.control)


class Agreement:
    """The stop and save flags of every step, agreed one step late and without blocking.

    A blocking all-reduce each step makes every rank wait there for the slowest one's CPU (and on
    CUDA adds a host round trip to every step): measured on the 2-process CPU run of the toy recipe,
    a median of 1-2 ms and a mean of 2.7-2.9 ms per 140 ms step, against 0.24 ms (median) for this
    exchange (docs/training.md). Here step k's flags
    start an asynchronous all-reduce on the control group, and the result is read after step k+1,
    by which time it has long arrived. Every rank exchanges at the same step counts, so every rank
    gets the same answer at the same step: all stop after the same step, one step after the signal.
    With one process the answer is immediate (:meth:`World.agree`).
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self._pending: tuple[Any, torch.Tensor] | None = None

    def exchange(self, *flags: bool) -> tuple[bool, ...]:
        """Start agreeing on ``flags``; returns what the previous call's flags agreed to (all false
        at the first call). The flags must be as many at every call."""
        if not self.world.distributed:
            return self.world.agree(*flags)
        previous = self.finish(len(flags))
        t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32)
        work = dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.world.control, async_op=True)
        self._pending = (work, t)
        return previous

    def finish(self, count: int) -> tuple[bool, ...]:
        """Wait for the pending agreement (call it on every rank before the process group ends);
        returns its result, or ``count`` false flags when none is pending."""
        if self._pending is None:
            return (False,) * count
        work, t = self._pending
        self._pending = None
        work.wait()
        return tuple(bool(v) for v in t.tolist())


_world = World()


def world() -> World:
    """The current process's :class:`World` (rank 0 of 1 unless :func:`init` joined a group)."""
    return _world


def init(device_name: str) -> World:
    """Join the process group torchrun set up: NCCL with one GPU per process, or gloo on the CPU.

    ``device_name`` is the recipe's ``experiment.device``; "auto" and "cuda" pick CUDA when it is
    available (device ``cuda:LOCAL_RANK``), "cpu" forces gloo even on a GPU machine. A process
    that torchrun did not start stays rank 0 of 1.
    """
    global _world
    if _world.distributed or not launched():
        return _world
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if device_name not in ("auto", "cpu") and not use_cuda:
        raise I2IError(
            f"experiment.device = {device_name!r}: training on several processes needs CUDA "
            '(NCCL) or the CPU (gloo); set device = "auto", "cuda" or "cpu".'
        )
    if use_cuda:
        if not torch.cuda.is_available():
            raise I2IError(f"experiment.device = {device_name!r} but CUDA is not available here.")
        if local_rank >= torch.cuda.device_count():
            raise I2IError(
                f"Process {rank} has LOCAL_RANK {local_rank}, but this machine has only "
                f"{torch.cuda.device_count()} GPUs: start at most that many processes per node."
            )
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        control = dist.new_group(backend="gloo")
    else:
        dist.init_process_group("gloo")
        control = dist.group.WORLD
    _world = World(rank=rank, size=size, local_rank=local_rank, control=control)
    return _world


def shutdown() -> None:
    """Leave the process group (after the last collective of this process)."""
    global _world
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _world = World()


def place(device: torch.device) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` for CUDA, the device itself otherwise."""
    if _world.distributed and device.type == "cuda":
        return torch.device("cuda", _world.local_rank)
    return device


# -- data ----------------------------------------------------------------------------------------
class ShardedSampler(EpochSampler):
    """Rank ``rank``'s share of the (seed, epoch) permutation: its positions rank, rank+N, ...

    The permutation is padded with its own first items to a multiple of N, as PyTorch's
    DistributedSampler does, so every rank runs the same number of steps. ``set_epoch``'s
    ``start`` counts this rank's items (batches done x per-process batch); all ranks together have
    then consumed ``start * N`` positions of the permutation.
    """

    def __init__(self, size: int, seed: int, rank: int, world_size: int, shuffle: bool = True) -> None:
        super().__init__(size, seed, shuffle)
        self.rank = rank
        self.world_size = world_size

    def _share(self) -> list[int]:
        order = super().order()
        padded = math.ceil(self.size / self.world_size) * self.world_size
        while len(order) < padded:
            order += order[: padded - len(order)]
        return order[self.start * self.world_size :][self.rank :: self.world_size]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self._share()])

    def __len__(self) -> int:
        return len(self._share())


def make_sampler(size: int, seed: int) -> EpochSampler:
    """The training sampler: the whole permutation in one process, this rank's share otherwise."""
    if not _world.distributed:
        return EpochSampler(size, seed)
    return ShardedSampler(size, seed, _world.rank, _world.size)


def steps_per_epoch(size: int, batch_size: int) -> int:
    """Optimiser steps per epoch: each rank holds ceil(size / N) items in batches of ``batch_size``."""
    return math.ceil(math.ceil(size / _world.size) / batch_size)


def resume_position(state: dict[str, Any], batch_size: int) -> tuple[int, str | None]:
    """The batch index within the epoch at which to continue ``state`` with this world size.

    A checkpoint records its world size; with a different one, the items already consumed this
    epoch (batches x batch x old world size) are rounded down to whole batches of the new global
    batch, so a few items may be seen twice; the note says how many.
    """
    done = int(state["batch_in_epoch"])
    old = int(state.get("world_size", 1))
    if old == _world.size or done == 0:
        return done, None
    consumed = done * batch_size * old
    step = batch_size * _world.size
    position = consumed // step
    repeated = consumed - position * step
    note = (
        f"resuming a run of {old} process(es) on {_world.size}: the epoch continues after item "
        f"{position * step} of the permutation"
        + (f" ({repeated} item(s) of this epoch are trained again)." if repeated else ".")
    )
    return position, note


# -- models --------------------------------------------------------------------------------------
class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with the matching backward: each rank's input feeds every rank's output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalisation whose training statistics cover the batches of all ranks.

    PyTorch's SyncBatchNorm runs on accelerators only; this one works on every device and
    backend (gloo on the CPU). Mean and variance are two all-reduces (sum, then sum of squared
    deviations) with autograd support, so gradients flow across ranks as well. With one
    process, or in eval mode, it is plain batch norm. Its state dict is BatchNorm's.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and _world.distributed):
            return super().forward(x)
        all_reduce = _SumOverRanks.apply
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([float(x.numel() // x.shape[1])], device=x.device, dtype=x.dtype)
        sums = all_reduce(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * n / torch.clamp(n - 1, min=1)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def has_batchnorm(net: nn.Module | None) -> bool:
    return net is not None and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


def _to_global(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (GlobalBatchNorm, nn.SyncBatchNorm)
    ):
        new = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        converted = _to_global(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def convert_batchnorm(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` with every batch norm synchronised across ranks (in place where possible).

    On CUDA PyTorch's SyncBatchNorm (its fused kernels); elsewhere :class:`GlobalBatchNorm`.
    Parameters and buffers are kept, so optimisers and state dicts are unaffected.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return _to_global(net)


def sync_batchnorm_wanted(setting: str, *nets: nn.Module | None) -> bool:
    """``train.sync_batchnorm``: "auto" syncs batch-norm models across processes, "off" never."""
    return setting != "off" and _world.distributed and any(has_batchnorm(n) for n in nets)


def no_forward_buffer_sync(parameters: Any = None) -> dict[str, bool]:
    """DDP's options for "buffers from rank 0 once, never again before a forward".

    Recent torch (2.14 has it) says so with ``forward_sync_buffers=False`` (the initial broadcast
    stays); older releases only have ``broadcast_buffers=False``, which also skips the initial
    broadcast, so :func:`replicate` then broadcasts the buffers itself.
    """
    import inspect

    if parameters is None:
        parameters = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    if "forward_sync_buffers" in parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class _Replica(nn.parallel.DistributedDataParallel):
    """DDP that also answers the wrapped network's own attributes (``latent_dim``, ``features``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


@dataclass
class Replicas:
    """The networks as the training step calls them: DDP-wrapped across processes, plain otherwise.

    A network is called through DDP only while it is being trained; a frozen one (D during G's
    update) is called unwrapped: DDP would wait for gradients of parameters that do not require
    any. Buffers are not broadcast from rank 0 at every forward (``forward_sync_buffers=False``):
    with synchronised batch norm the running statistics are equal on all ranks anyway, and
    re-broadcasting them between D's several forwards per step would modify tensors autograd still
    needs. Trainable parameters outside the wrapped networks (those losses own) have their
    gradients averaged by :meth:`sync_loss_gradients`.
    """

    wrapped: dict[int, nn.Module]  # id(network) -> its DDP replica
    loss_parameters: list[nn.Parameter]

    def replica(self, network: nn.Module) -> nn.Module:
        return self.wrapped.get(id(network), network)

    def sync_loss_gradients(self) -> None:
        """Average the gradients of loss-owned parameters over the ranks (DDP cannot see them)."""
        if not _world.distributed or not self.loss_parameters:
            return
        params = self.loss_parameters
        ref = params[0]
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
            + [torch.tensor([float(p.grad is not None) for p in params], device=ref.device, dtype=ref.dtype)]
        )
        dist.all_reduce(flat)
        flat /= _world.size
        present = flat[-len(params) :].tolist()
        offset = 0
        for p, had in zip(params, present, strict=True):
            n = p.numel()
            if had > 0:
                p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n


def replicate(
    networks: list[nn.Module],
    loss_parameters: list[nn.Parameter],
    device: torch.device,
    seed: int,
    step: int,
) -> Replicas:
    """DDP wrappers for ``networks`` (after their weights are final: DDP broadcasts rank 0's).

    Ranks other than 0 also get their own random stream, from (seed, rank, step), so that dropout
    masks and latent codes differ between ranks as they differ between the items of one batch.
    """
    if not _world.distributed:
        return Replicas({}, loss_parameters)
    ids = [device.index] if device.type == "cuda" else None
    # Buffers are synced from rank 0 once, here; not again before every forward (see Replicas).
    kwargs = dict(device_ids=ids, **no_forward_buffer_sync())
    wrapped = {id(net): _Replica(net, **kwargs) for net in networks}
    if "broadcast_buffers" in kwargs:  # older torch skips the initial buffer broadcast too: do it here
        for net in networks:
            for buffer in net.buffers():
                dist.broadcast(buffer.data, src=0)
    for p in loss_parameters:  # start from rank 0's values, as DDP does for the networks
        dist.broadcast(p.data, src=0)
    if _world.rank > 0:
        torch.manual_seed(_mix(seed, _world.rank, step))
    return Replicas(wrapped, loss_parameters)
