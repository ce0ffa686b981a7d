"""torchrun / DistributedDataParallel support.

`torchrun --nproc_per_node N main_THUMOS.py ...` runs N processes (NCCL on GPU, gloo on CPU);
plain `python main_THUMOS.py` runs one process and every helper here is a no-op.
Global-batch semantics: the shuffled order and each item's random sampling do not depend on
the number of processes, each process takes its slice of every global batch, and the loss is
weighted so that DDP's gradient average equals the mean over the global batch.
"""
import os

import numpy as np
import torch
import torch.distributed as dist

from utils import UserError


def init_distributed(args):
    """Set args.rank, args.world_size, args.is_main (and the CUDA device) from torchrun's
    environment."""
    args.world_size = int(os.environ.get("WORLD_SIZE", "1"))
    args.rank = int(os.environ.get("RANK", "0"))
    args.is_main = args.rank == 0
    if args.world_size == 1:
        return args
    if args.batch_size < args.world_size:
        raise UserError(f"--batch_size {args.batch_size} is smaller than the {args.world_size} "
                        f"processes")
    if args.device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        args.device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    return args


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
    A process whose slice of the last batch is empty gets one item with loss weight 0
    (`loss_weight`) so that it still takes part in the gradient all-reduce.
    """

    def __init__(self, num_items, batch_size, generator, rank=0, world_size=1):
        self.num_items, self.batch_size, self.generator = num_items, batch_size, generator
        self.rank, self.world_size = rank, world_size

    def __len__(self):
        return (self.num_items + self.batch_size - 1) // self.batch_size

    def global_sizes(self):
        return [min(self.batch_size, self.num_items - start)
                for start in range(0, self.num_items, self.batch_size)]

    def loss_weight(self, batch_index):
        """Weight of this process's mean loss so that the DDP average is the global-batch mean."""
        global_size = self.global_sizes()[batch_index]
        return split_sizes(global_size, self.world_size)[self.rank] * self.world_size / global_size

    def __iter__(self):
        order = torch.randperm(self.num_items, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**31 - 1, (self.num_items,), generator=self.generator).tolist()
        for start in range(0, self.num_items, self.batch_size):
            keys = list(zip(order[start:start + self.batch_size],
                            seeds[start:start + self.batch_size]))
            sizes = split_sizes(len(keys), self.world_size)
            offset = sum(sizes[:self.rank])
            mine = keys[offset:offset + sizes[self.rank]]
            yield mine if mine else keys[:1]


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
