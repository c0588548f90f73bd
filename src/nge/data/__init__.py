"""Data: every reader, loader and writer nge has, none of which downloads anything.

    sets        in-memory classification sets: idx (Fashion-MNIST), CIFAR pickles, synthetic; the split and
                data.limit's images
    batches     BatchLoader: device-resident batches augmented a whole batch at a time
    transforms  Pillow decoding and the ImageNet augmentation
    loader      ImageLoader: DataLoader workers for large images
    folder      the ImageFolder layout, and the user's own images in it: in memory, or streamed when large
    imagenet    ImageNet in the ImageFolder layout and its loader
    probe       every data set without decoding it: its (channels, size, classes), whether its files are there
    voc         PASCAL VOC 2012 segmentation: classes, colours, data set, loader
    synthetic   tiny synthetic data sets in the ImageFolder and VOC layouts
"""

from nge.data.batches import Augment, BatchLoader, cutout, random_crop, random_flip
from nge.data.folder import folder_loader, load_folder, scan_folder
from nge.data.imagenet import imagenet_loader
from nge.data.probe import check_files, input_shape
from nge.data.sets import (
    Dataset,
    ImageSet,
    describe,
    limit_indices,
    load_cifar,
    load_dataset,
    load_fashion_mnist,
    make_synthetic,
    read_idx,
    split_train_val,
    write_cifar_batch,
)
from nge.data.synthetic import write_synthetic_folder, write_synthetic_imagefolder, write_synthetic_voc
from nge.data.voc import voc_loader

__all__ = [
    "Augment", "BatchLoader", "Dataset", "ImageSet", "check_files", "cutout", "describe", "folder_loader", "imagenet_loader",
    "input_shape", "limit_indices", "load_cifar", "load_dataset", "load_fashion_mnist", "load_folder", "make_synthetic",
    "random_crop", "random_flip", "read_idx", "scan_folder", "split_train_val", "voc_loader", "write_cifar_batch",
    "write_synthetic_folder", "write_synthetic_imagefolder", "write_synthetic_voc",
]
