"""Batches of a map-style image set through torch's DataLoader, with Pillow decoding in worker
processes; the order and the augmentation depend on (seed, epoch, index) only, never on the number
of workers. An NGEError raised in a worker comes back as the same one-line message, and the
workers are stopped at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils import signal_handling

from nge.data.sets import limit_indices
from nge.data.transforms import one_line
from nge.errors import NGEError


def _worker_message(e: NGEError) -> str:
    """The one-line message of an NGEError, also when torch re-raised it from a worker with a traceback."""
    lines = str(e).strip().splitlines()
    if len(lines) <= 1:
        return str(e)
    for line in reversed(lines):
        _, sep, msg = line.partition("NGEError: ")
        if sep:
            return msg.strip()
    return one_line(lines[-1])


def _stop_workers(it: Iterator) -> None:
    """Terminate a DataLoader iterator's worker processes at once. torch's own shutdown, run when the
    iterator is collected, waits up to 5 s for each worker to finish the batch it is decoding."""
    workers = getattr(it, "_workers", None)
    if not workers or getattr(it, "_shutdown", True):  # no workers (workers=0), or already shut down
        return
    if getattr(it, "_worker_pids_set", False):  # else torch's SIGCHLD handler reports the killed workers
        signal_handling._remove_worker_pids(id(it))
        it._worker_pids_set = False
    for w in workers:
        if w.is_alive():
            w.terminate()
    it._shutdown_workers()  # joins the stopped workers and closes the queues


class FileSamples(Dataset):
    """A map-style set of (file, label) samples decoded per item; `set_epoch` selects the epoch's
    random numbers, which subclasses draw from (seed, epoch, index)."""

    def __init__(self, samples: list, seed: int):
        self.samples, self.seed, self.epoch = samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)


class ImageLoader:
    """Batches of a map-style data set through torch's DataLoader (Pillow decoding in `workers` processes).

    The order comes from a torch.Generator seeded by (seed, epoch) and the augmentation from
    per-sample generators seeded by (seed, epoch, index), so batches do not depend on `workers`.
    An NGEError from a worker is re-raised here as the same one-line NGEError; the workers are
    terminated then, and when an epoch's batches are left unread.
    """

    def __init__(
        self,
        dataset: Dataset,  # a map-style set with set_epoch(epoch): ImageFolderSet or VOCSegmentation
        batch_size: int,
        workers: int,
        seed: int,
        shuffle: bool,
        drop_last: bool | None,
        num_classes: int,
        classes: Sequence[str],
        limit: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        if batch_size < 1:
            raise NGEError(f"batch size must be positive, got {batch_size}")
        if workers < 0:
            raise NGEError(f"workers must be 0 or more, got {workers}")
        self.dataset = dataset
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.shuffle = shuffle
        n = len(dataset)
        # `limit`: a fixed, seeded subset of the samples (the same one every epoch)
        if limit is not None and limit < n:
            self.indices = limit_indices(n, limit, seed).tolist()
        else:
            self.indices = list(range(n))
        # data parallel: global batches of world * batch_size, this process takes its slice of each
        self.rank, self.world = shard
        if drop_last is None:  # drop the last partial batch when training (shuffling) only
            drop_last = shuffle
        if drop_last and self.world > 1 and len(self.indices) < batch_size * self.world:
            raise NGEError(f"{len(self.indices)} images are fewer than one global batch of {batch_size * self.world}; "
                           "lower data.batch_size")
        self.drop_last = drop_last and len(self.indices) >= batch_size * self.world
        self.num_classes = num_classes
        self.classes = list(classes)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        n, b = len(self.indices), self.batch_size * self.world
        return n // b if self.drop_last else -(-n // b)

    def _order(self) -> list[int]:
        order = self.indices
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = [self.indices[i] for i in torch.randperm(len(self.indices), generator=g).tolist()]
        if self.world == 1:
            return order
        b = self.batch_size
        return [i for start in range(0, len(self) * b * self.world, b * self.world)
                for i in order[start + self.rank * b: start + (self.rank + 1) * b]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches_from(0)

    def batches_from(self, first: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This epoch's batches from number `first` on, without decoding the ones before (a resumed
        epoch): each image's augmentation depends only on (seed, epoch, index), so they are the same."""
        self.dataset.set_epoch(self.epoch)  # workers copy the data set, epoch included, at iter()
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self._order()[first * self.batch_size:],
            # its own generator: a DataLoader otherwise draws its worker seed from torch's global one,
            # which would shift the drop-path masks of a resumed run
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.workers,
            drop_last=self.drop_last,
            pin_memory=False,
            persistent_workers=False,
        )
        it = iter(loader)
        try:
            while True:
                try:
                    batch = next(it)
                except StopIteration:
                    return
                except NGEError as e:
                    _stop_workers(it)
                    raise NGEError(_worker_message(e)) from None
                yield batch
        finally:  # an error, or batches left unread: the workers go now
            _stop_workers(it)
