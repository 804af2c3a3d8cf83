"""Datasets, samplers and the DataLoader, as `torch.utils.data`.

`dt.data.datasets` (MNIST, CIFAR, Digits, ...) and `dt.data.transforms` play the part of
torchvision's modules of the same names.
"""
from dtrain.data import datasets, transforms  # noqa: F401
from dtrain.data.collate import default_collate, default_convert  # noqa: F401
from dtrain.data.dataloader import DataLoader  # noqa: F401
from dtrain.data.dataset import (ChainDataset, ConcatDataset, Dataset,  # noqa: F401
                                 IterableDataset, StackDataset, Subset, TensorDataset,
                                 random_split)
from dtrain.data.sampler import (BatchSampler, DistributedSampler, RandomSampler,  # noqa: F401
                                 ResumableDistributedSampler, Sampler, SequentialSampler,
                                 SubsetRandomSampler, WeightedRandomSampler)
from dtrain.data.worker import WorkerInfo, get_worker_info  # noqa: F401
