"""Batches of an in-memory set kept as tensors on the device, normalised and augmented a whole batch
at a time (random crop, flip, cutout), in an order and with random numbers fixed by (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from nge.data.sets import ImageSet
from nge.errors import NGEError


@dataclass
class Augment:
    crop_pad: int = 0
    flip: bool = False
    cutout: int = 0


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by `pad` and take a random crop of the original size per sample, in one gather."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows, cols]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mask = (torch.rand(x.shape[0], generator=g) < 0.5).to(x.device)
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, length: int, g: torch.Generator) -> torch.Tensor:
    """Zero a length x length square (clipped at the border) centred at a random pixel per sample."""
    if length <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=g).to(x.device)
    cx = torch.randint(0, w, (n,), generator=g).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= (cy[:, None] - length // 2)) & (ys < (cy[:, None] - length // 2 + length))
    in_x = (xs >= (cx[:, None] - length // 2)) & (xs < (cx[:, None] - length // 2 + length))
    hole = in_y[:, :, None] & in_x[:, None, :]
    return x.masked_fill(hole[:, None], 0)


def augment_batch(x: torch.Tensor, a: Augment, mean: torch.Tensor, std: torch.Tensor,
                  g: torch.Generator) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> float, normalised ((x - mean) / std with both in pixel units,
    shaped (1, C, 1, 1)) and augmented: random crop and flip on raw pixels (so padding is black as
    in the usual pipeline), then cutout."""
    x = x.float()
    if a.crop_pad:
        x = random_crop(x, a.crop_pad, g)
    if a.flip:
        x = random_flip(x, g)
    x = (x - mean) / std
    if a.cutout:
        x = cutout(x, a.cutout, g)
    return x


class BatchLoader:
    """Iterates (x, y) batches of a device-resident ImageSet.

    Images stay uint8 on the device; a batch is normalised and augmented as a whole. Order and
    augmentation come from a generator seeded by (seed, epoch), so any epoch can be replayed
    exactly (resume needs no loader state).

    `shard=(rank, world)` (data parallel): every process draws the same global batches of
    `world * batch_size` images, with the same random numbers as one process drawing them, and
    yields its own `batch_size` slice.
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        shuffle: bool = False,
        augment: Augment | None = None,
        drop_last: bool = False,
        seed: int = 0,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.x = data.x.to(device)
        self.y = data.y.to(device)
        self.rank, self.world = shard
        self.local_batch = batch_size
        self.batch_size = batch_size * self.world  # the global batch
        self.device = device
        self.shuffle = shuffle
        self.augment = augment or Augment()
        if drop_last and self.world > 1 and len(data) < self.batch_size:  # processes must take equal steps
            raise NGEError(f"{len(data)} images are fewer than one global batch of {self.batch_size} "
                           f"({self.world} processes x {batch_size}); lower data.batch_size")
        self.drop_last = drop_last and len(data) >= self.batch_size
        self.seed = seed
        self.epoch = 0
        self.channels_last = channels_last
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches_from(0)

    def batches_from(self, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from number `first` on (a resumed epoch). The random numbers come
        from one generator in sequence, so the batches before `first` are drawn and dropped."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = self.x.shape[0]
        order = torch.randperm(n, generator=g).to(self.device) if self.shuffle else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[sl] if order is not None else sl
            x = augment_batch(self.x[idx], self.augment, self.mean, self.std, g)
            y = self.y[idx]
            if self.world > 1:
                mine = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
                x, y = x[mine], y[mine]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if b >= first:
                yield x, y
