"""Train a mentor data-parallel with Ray Train (DDP): gloo on CPUs, NCCL on GPUs.

    mentor, metrics = train_mentor_ddp(arch, splits, workers=4, use_gpu=True, epochs=60, out="mentors/m.pt")
    mentee mentor train --workers 4 --accelerator cuda     # the same from the CLI

The recipe is `train_mentor`'s (AdamW, weight decay 5e-4 on weights only, one-cycle
schedule from `optim.lr_factor`, batch 128, bf16 autocast on CUDA), written as a plain
DDP loop: every worker holds the splits on its device, a `DistributedSampler` gives it
its shard of each epoch's order, `prepare_model` wraps the net in DDP. Rank 0 evaluates
val/test once at the end and returns the weights as a checkpoint; the driver saves them
with `save_mentor`, so the file is the one single-process training writes.

Works inside an existing Ray (tests, clusters: the controller books no CPU) or starts a
local one and shuts it down after.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from search.config import ArchConfig
from search.data import Splits
from search.errors import TrainingDiverged, UserError
from search.measure import count_params
from search.mentors import Mentor, save_mentor
from search.models import create_mentee
from search.train.device import autocast
from search.train.optim import lr_factor

__all__ = ["train_mentor_ddp", "prepare_mentor", "train_step", "report_final", "local_ray", "fit_workers"]

WEIGHT_DECAY = 5e-4  # train_mentor's
CHECKPOINT_FILE = "mentor.pt"
POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


# ------------------------------------------------------------- the worker side

def prepare_mentor(arch: ArchConfig, input_shape, num_classes: int, *, lr: float, seed: int
                   ) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Build the net on this worker's device, wrapped in DDP, with train_mentor's AdamW.
    Call inside a Ray Train worker."""
    from ray.train.torch import get_device, prepare_model

    dev = get_device()
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv once
    else:
        torch.set_flush_denormal(True)  # as the cohort does: denormal Adam moments crawl on CPUs
    torch.manual_seed(seed)  # same init everywhere (DDP broadcasts rank 0's anyway)
    model = prepare_model(create_mentee(arch, input_shape, num_classes))
    # decay matrices and kernels only, never biases or batch norm (the cohort's AdamW does the same)
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8)
    return model, opt


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               lr: float) -> torch.Tensor:
    """One optimiser step at learning rate `lr`; returns the loss without syncing the device."""
    for g in opt.param_groups:
        g["lr"] = lr
    with autocast(x.device):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()  # DDP averages the gradients over workers here
    opt.step()
    return loss.detach()


@torch.no_grad()
def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(x), chunk):
        with autocast(x.device):
            correct += int((net(x[i:i + chunk]).argmax(-1) == y[i:i + chunk]).sum())
    net.train()
    return correct / max(len(x), 1)


def _all_reduce(value: float, dev: torch.device, op: str = "sum") -> float:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(t)


def _process_ids() -> list[int]:
    """Every worker's pid: proof that the world really had that many processes."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [os.getpid()]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, os.getpid())
    return out


def _worker_loop(cfg: dict) -> None:
    """One DDP worker: its shard of every epoch, a report per epoch, rank 0's checkpoint at the end."""
    import ray
    import ray.train
    from ray.train.torch import get_device
    from torch.utils.data import DistributedSampler

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    dev = get_device()
    splits: Splits = ray.get(cfg["splits"]).to(dev)  # small datasets: the whole split lives on the device
    arch, epochs, bs, seed = cfg["arch"], cfg["epochs"], cfg["local_batch"], cfg["seed"]
    model, opt = prepare_mentor(arch, splits.input_shape, splits.num_classes, lr=cfg["lr"], seed=seed)
    # drop_last: every worker gets the same number of samples, hence of steps (DDP needs equal step counts)
    # the sampler reads only len() of its dataset: a range of sample ids is enough (torch types it a Dataset)
    sampler: DistributedSampler[int] = DistributedSampler(range(len(splits.y_train)),  # type: ignore[arg-type]
                                                          num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                                          drop_last=True)
    steps = len(sampler) // bs  # whole batches only, as the cohort: every step has the same shape
    total = steps * epochs
    curve: list[float] = []
    for e in range(epochs):
        sampler.set_epoch(e)  # a new order each epoch, the same on every worker, shards disjoint
        order = torch.tensor(list(sampler), device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=dev)
        for i in range(steps):
            ids = order[i * bs:(i + 1) * bs]
            loss_sum += train_step(model, opt, splits.x_train[ids], splits.y_train[ids],
                                   cfg["lr"] * lr_factor("onecycle", e * steps + i, total))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = _all_reduce(time.perf_counter() - t0, dev, "max")  # the slowest worker sets the pace
        train_loss = _all_reduce(float(loss_sum) / steps, dev) / world
        metrics = {"epoch": e + 1, "train_loss": train_loss, "world_size": world, "epoch_seconds": seconds,
                   "samples": steps * bs * world}
        curve.append(train_loss)
        if not math.isfinite(train_loss):  # the same all-reduced value on every rank: all stop together
            report_final({**metrics, "diverged": f"loss became {train_loss} in epoch {e + 1}"},
                         {} if rank == 0 else None)
            return
        if e + 1 < epochs:
            ray.train.report(metrics)
    metrics["processes"] = len(set(_process_ids()))
    if rank != 0:
        report_final(metrics)
        return
    # rank 0's own weights and BN statistics (DDP wraps the net as `.module`)
    net = cast(nn.Module, model.module) if hasattr(model, "module") else model
    metrics["val_acc"] = _accuracy(net, splits.x_val, splits.y_val)
    metrics["test_acc"] = _accuracy(net, splits.x_test, splits.y_test)
    report_final(metrics, {"state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                           "train_loss": curve})


def report_final(metrics: dict, blob: dict | None = None) -> None:
    """Every worker's last report; rank 0 passes `blob` (tensors welcome), saved as a checkpoint.
    Ray Train V2's `Result.metrics` are those of the latest *checkpoint*: a report without one
    never reaches the driver, so the final one always carries a checkpoint."""
    import ray.train

    if blob is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(blob, Path(d) / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


# ------------------------------------------------------------- the driver side

@contextlib.contextmanager
def local_ray(num_cpus: int | None = None):
    """Use the Ray this process already has, or the cluster $RAY_ADDRESS names, or start a quiet
    local one; shut down what this call started."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    # Not plain ray.init(): with no address it joins whatever Ray /tmp/ray/ray_current_cluster names,
    # another user's (or a dead one's) on a shared machine. "local" always starts our own.
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, num_cpus=num_cpus if address == "local" else None, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def fit_workers(loop, cfg: dict, *, workers: int, use_gpu: bool, storage: str | Path, name: str):
    """Run `loop(cfg)` on `workers` Ray Train workers (one CPU, and one GPU if `use_gpu`, each);
    return the `ray.train.Result`. Ray must be initialised."""
    import ray
    from ray.train import LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    have = ray.cluster_resources()
    need = {"CPU": workers, **({"GPU": workers} if use_gpu else {})}
    for res, n in need.items():
        # Ray Train would wait for the resources forever; say it at once instead
        if have.get(res, 0) < n:
            raise UserError(f"--workers {workers}: needs {n} {res}s, the Ray cluster has {int(have.get(res, 0))}")
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    # The controller reads each worker's one-slot report queue once per poll (2 s by default), so
    # every `report` after the first blocked up to 2 s: a minute of a 60-epoch mentor. Polling
    # every 0.25 s costs the controller little (unless the user chose an interval).
    poll = {} if POLL_ENV in os.environ else {POLL_ENV: "0.25"}
    os.environ.update(poll)  # read here, at fit(): the trainer passes it on to the controller
    trainer = TorchTrainer(
        loop, train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
        # ray.train picks Train v2's RunConfig at import (it has logging_config); mypy sees v1's (ray.air)
        run_config=RunConfig(name=name, storage_path=str(Path(storage).resolve()),  # type: ignore[call-arg]
                             logging_config=LoggingConfig(log_level="WARNING")))
    try:
        return trainer.fit()
    finally:
        for k in poll:
            os.environ.pop(k, None)


def train_mentor_ddp(arch: ArchConfig, splits: Splits, *, workers: int, use_gpu: bool = False, epochs: int = 60,
                     lr: float = 3e-3, batch_size: int = 128, seed: int = 0, out: str | Path | None = None,
                     storage: str | Path | None = None) -> tuple[Mentor, dict[str, float]]:
    """Train `arch` on `splits` (CPU tensors) with `workers` DDP workers; save to `out` if given.

    Returns `train_mentor`'s (Mentor, metrics): val_acc, test_acc, params, plus world_size,
    processes (distinct worker pids seen) and train_seconds. `storage` is Ray's storage
    path (shared on a multi-node cluster); by default a temporary folder under the current
    directory, removed afterwards."""
    import ray
    from ray.train import TrainingFailedError

    if workers < 1:
        raise UserError(f"--workers: expected an integer ≥ 1, got {workers}")
    # `batch_size` is the GLOBAL batch, split over the workers, and the learning rate stays
    # train_mentor's: DDP averages the gradients of the same number of samples per step, so
    # steps per epoch, schedule and step size match single-process training and the mentor's
    # accuracy does not depend on how many workers trained it (no linear-scaling rule, which
    # would change the recipe and is a poor fit for Adam anyway). A batch that does not divide
    # evenly rounds down (128 over 3 workers: 42 each, 126 a step).
    local_batch = batch_size // workers
    if local_batch < 1:
        raise UserError(f"--workers {workers}: more workers than samples in a batch of {batch_size}")
    if len(splits.y_train) // workers < local_batch:
        raise UserError(f"dataset '{splits.name}': {len(splits.y_train)} training samples are fewer than one "
                        f"batch of {local_batch * workers}")
    tmp = None
    if storage is None:
        tmp = storage = tempfile.mkdtemp(prefix=".mentor-ddp-", dir=Path.cwd())
    try:
        with local_ray(num_cpus=None):
            cfg = {"splits": ray.put(splits.to("cpu")), "arch": arch, "epochs": epochs, "lr": lr,
                   "local_batch": local_batch, "seed": seed}
            t0 = time.perf_counter()
            try:
                result = fit_workers(_worker_loop, cfg, workers=workers, use_gpu=use_gpu, storage=storage,
                                     name=f"mentor-ddp-{int(time.time())}")
            except TrainingFailedError as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise TrainingDiverged(f"distributed mentor training failed: {first}") from None
            seconds = time.perf_counter() - t0
            last = result.metrics or {}
            if "diverged" in last:
                raise TrainingDiverged(f"mentor training failed: {last['diverged']}")
            with result.checkpoint.as_directory() as d:
                blob = torch.load(Path(d) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    model = create_mentee(arch, splits.input_shape, splits.num_classes)
    model.load_state_dict(blob["state_dict"])
    metrics = {"val_acc": last["val_acc"], "test_acc": last["test_acc"], "params": count_params(model)}
    if out is not None:
        save_mentor(out, model, arch, dataset=splits.name, input_shape=splits.input_shape,
                    num_classes=splits.num_classes, metrics=metrics)
    spec = {"kind": "family", "arch": arch.__dict__, "dataset": splits.name, "metrics": metrics}
    extra = {"world_size": last["world_size"], "processes": last["processes"], "train_seconds": seconds,
             "train_loss": blob["train_loss"][-1]}
    return Mentor(model.eval(), tuple(model.taps), splits.input_shape, splits.num_classes, spec), {**metrics, **extra}
