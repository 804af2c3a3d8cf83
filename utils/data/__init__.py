"""`dt.utils.data`, as `torch.utils.data`: the names of `dtrain.data` (defined there).

`from dtrain.utils.data import DataLoader, Dataset, TensorDataset, random_split` is
`from dtrain.data import ...`; the datasets and transforms stay at `dt.data.datasets` and
`dt.data.transforms` (torchvision's part).
"""
from dtrain.data import (BatchSampler, ChainDataset, ConcatDataset, DataLoader,  # noqa: F401
                         Dataset, DistributedSampler, IterableDataset, RandomSampler, Sampler,
                         SequentialSampler, Subset, SubsetRandomSampler, TensorDataset,
                         WeightedRandomSampler, WorkerInfo, default_collate, default_convert,
                         get_worker_info, random_split)
from dtrain.utils.data import distributed  # noqa: F401,E402
