"""torchrun / DistributedDataParallel support.

`torchrun --nproc_per_node N main_THUMOS.py ...` runs N processes (NCCL on GPU, gloo on CPU);
plain `python main_THUMOS.py` runs one process and every helper here is a no-op.
Global-batch semantics: the shuffled order and each item's random sampling do not depend on
the number of processes, each process takes its slice of every global batch, and the loss is
weighted so that DDP's gradient average equals the mean over the global batch.
"""
import contextlib
import os

import numpy as np
import torch
import torch.distributed as dist

from utils import PeerStopped, UserError, exit_status


def init_distributed(args):
    """Set args.rank, args.world_size, args.is_main (and the CUDA device) from torchrun's
    environment and join the process group (its device given: NCCL binds it at once)."""
    args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args.rank = int(os.environ.get("RANK", "0"))
    args.is_main = args.rank == 0
    if args.world_size == 1:
        return args
    if args.gpu != "":
        raise UserError(f"--gpu {args.gpu} cannot be used under torchrun: each process takes the "
                        f"GPU of its LOCAL_RANK; choose the GPUs with CUDA_VISIBLE_DEVICES=... "
                        f"torchrun ...")
    if args.batch_size < args.world_size:
        raise UserError(f"--batch_size {args.batch_size} is smaller than the {args.world_size} "
                        f"processes")
    options = {}
    if args.device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        args.device = f"cuda:{local_rank}"
        options["device_id"] = torch.device(args.device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo", **options)
    return args


def shutdown():
    """Leave the process group (at the end of a torchrun process, whatever ended it)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def rank0_decides():
    """A block whose checks only rank 0 makes (run folder, lock, config, demo data): every rank
    runs it, then learns whether rank 0 got through. When rank 0 stopped, the others raise
    PeerStopped with its exit status (run_cli exits quietly with it) instead of failing in the
    next collective operation with a traceback."""
    if world_size() == 1:
        yield
        return
    status = 0
    try:
        yield
    except BaseException as err:
        status = exit_status(err) or 1
        raise
    finally:
        decision = [status]
        dist.broadcast_object_list(decision, src=0)
        if decision[0] and rank() != 0 and not status:
            raise PeerStopped(decision[0])


def peer_lost(err):
    """True for the error a collective operation raises when another process of the job has
    ended (torch.distributed's DistError; gloo's "Connection closed by peer" before that)."""
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(err, dist_error):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        phrase in text for phrase in ("connection closed by peer", "connection reset by peer",
                                      "broken pipe", "socket closed"))


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def split_sizes(count, parts):
    """Sizes of np.array_split(range(count), parts): the per-process share of one global batch."""
    return [len(part) for part in np.array_split(np.arange(count), parts)]


class GlobalBatchSampler:
    """Shuffled global batches, identical on every process; yields this process's slice.

    Keys are (index, seed) so an item's random sampling does not depend on who loads it.
    Every process gets at least one item of every global batch: when the last global batch
    would have fewer items than processes, its items join the batch before it (at most one more
    item per process; the only case where the batches differ from a single process's). So no
    process trains on a stand-in item, which would enter SyncBatchNorm's statistics.
    """

    def __init__(self, num_items, batch_size, generator, rank=0, world_size=1):
        if num_items < world_size:
            raise UserError(f"the training set has {num_items} videos, fewer than the "
                            f"{world_size} processes; use fewer processes")
        self.num_items, self.batch_size, self.generator = num_items, batch_size, generator
        self.rank, self.world_size = rank, world_size

    def __len__(self):
        return len(self.global_sizes())

    def global_sizes(self):
        sizes = [min(self.batch_size, self.num_items - start)
                 for start in range(0, self.num_items, self.batch_size)]
        if len(sizes) > 1 and sizes[-1] < self.world_size:        # batch_size >= world_size
            sizes[-2:] = [sizes[-2] + sizes[-1]]
        return sizes

    def loss_weight(self, batch_index):
        """Weight of this process's mean loss so that the DDP average is the global-batch mean."""
        global_size = self.global_sizes()[batch_index]
        return split_sizes(global_size, self.world_size)[self.rank] * self.world_size / global_size

    def __iter__(self):
        order = torch.randperm(self.num_items, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.num_items,), generator=self.generator).tolist()
        start = 0
        for size in self.global_sizes():
            keys = list(zip(order[start:start + size], seeds[start:start + size]))
            start += size
            sizes = split_sizes(len(keys), self.world_size)
            offset = sum(sizes[:self.rank])
            yield keys[offset:offset + sizes[self.rank]]


def shard(num_items, split=True):
    """Indices this process handles in an inference pass (all on rank 0 when split is False)."""
    if world_size() == 1:
        return list(range(num_items))
    if not split:
        return list(range(num_items)) if rank() == 0 else []
    return list(range(rank(), num_items, world_size()))


def all_gather_dict(local):
    """Merge a dict from every process (on every process)."""
    if world_size() == 1:
        return dict(local)
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, local)
    merged = {}
    for part in gathered:
        merged.update(part)
    return merged


def all_gather_list(local):
    if world_size() == 1:
        return [local]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def all_reduce_sum(values, device):
    """Sum a list of floats over processes."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier():
    if world_size() > 1:
        dist.barrier()


def wrap_model(model, args):
    """DDP around the model (SyncBatchNorm on GPU so BN statistics are global-batch statistics)."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    if args.device.startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[torch.cuda.current_device()],
                                       find_unused_parameters=not args.use_pseudo_instance_loss)
    return DistributedDataParallel(model, find_unused_parameters=not args.use_pseudo_instance_loss)
