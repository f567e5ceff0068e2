"""Each step's batch, cut on the host: the shuffled rows, their distinct items padded to a bucket,
and the inverse index, sent to the device in one pinned, non-blocking copy.

Why on the host: ``torch.unique`` (whose output size the host must know) would make every GPU
step wait for the host. Why buckets: each step has a different number of distinct items, and
cuDNN attention and compiled graphs plan per shape; padding with the padding item 0 up to a
multiple of ``train.item_bucket`` leaves a few shapes. The padded rows are encoded but never
indexed, so the loss and its gradients are those of the unpadded batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """One step's input on the device, and its distinct items on the host (for prefetching)."""

    ids: torch.Tensor  # [B, L+1] item ids
    uniq: torch.Tensor  # distinct ids, padded to the bucket
    inverse: torch.Tensor  # ids.reshape(-1) == uniq[inverse]
    host_uniq: torch.Tensor  # uniq on the host

    @property
    def shape(self) -> tuple[int, int]:
        """(sequences, distinct items): what a compiled graph or an attention plan is specialised on."""
        return self.ids.size(0), self.uniq.numel()


def bucketed(n: int, bucket: int, cap: int) -> int:
    """``n`` distinct items padded up to a multiple of ``bucket``, but never past ``cap``."""
    return n if bucket <= 1 else max(n, min(-(-n // bucket) * bucket, cap))


def typical_items(train: torch.Tensor, batch: int, bucket: int, n_items: int, sample: int = 20) -> int:
    """Mean distinct items of the first ``sample`` batches, padded as the trainer pads them."""
    counts = [torch.unique(train[i:i + batch]).numel() for i in range(0, min(len(train), sample * batch), batch)]
    return bucketed(max(1, round(sum(counts) / len(counts))), bucket, min(n_items + 1, batch * train.size(1)))


def cut_batches(rows: torch.Tensor, order: torch.Tensor, n_steps: int, batch_size: int, bucket: int,
                every_slot: bool, n_items: int, world: int, device: torch.device, clone: bool) -> list[Batch]:
    """The ``n_steps`` batches of ``rows[order]`` (see the module docstring). ``every_slot``: the
    paper's code, every slot of every sequence encoded (padding and repeats too); ``world``: each
    data-parallel rank encodes an equal share, so the distinct items pad to a multiple of it;
    ``clone``: compiled graphs guard on storage offsets, so each step gets tensors of its own."""
    # no step can have more distinct items than there are items, or slots in a batch: padding
    # past that is work without a purpose (a 40-item set would pad 41 to 64)
    slots = batch_size * rows.size(1)
    cap = slots if every_slot else min(n_items + 1, slots)
    parts: list[torch.Tensor] = []
    hosts: list[tuple[torch.Size, torch.Tensor]] = []
    for step in range(n_steps):
        ids = rows[order[step * batch_size:(step + 1) * batch_size]]
        if every_slot:
            uniq, inverse = ids.reshape(-1), torch.arange(ids.numel())
        else:
            uniq, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
        size = -(-bucketed(uniq.numel(), bucket, cap) // world) * world
        uniq = torch.cat([uniq, uniq.new_zeros(size - uniq.numel())])
        parts += [ids.reshape(-1), uniq, inverse]
        hosts.append((ids.shape, uniq))
    flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    if device.type == "cuda":
        flat = flat.pin_memory()
    flat = flat.to(device, non_blocking=True)
    batches, pos = [], 0
    for shape, host_uniq in hosts:
        n, n_uniq = shape.numel(), host_uniq.numel()
        ids, uniq, inverse = (flat[pos:pos + n].view(shape), flat[pos + n:pos + n + n_uniq],
                              flat[pos + n + n_uniq:pos + 2 * n + n_uniq])
        if clone:
            ids, uniq, inverse = ids.clone(), uniq.clone(), inverse.clone()
        batches.append(Batch(ids, uniq, inverse, host_uniq))
        pos += 2 * n + n_uniq
    return batches
