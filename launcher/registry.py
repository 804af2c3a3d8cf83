"""What a config's names refer to: data sets, transforms, optimizers and schedulers."""
import numpy as np

from dtrain import optim
from dtrain.core.tensor import Tensor
from dtrain.data import datasets, transforms
from dtrain.data.dataset import Dataset
from dtrain.optim import lr_scheduler


class SyntheticLM(Dataset):
    """Token sequences from a fixed random Markov chain: (tokens[:-1], tokens[1:]) pairs for
    next-token prediction (a learnable task for transformer_lm without downloads)."""

    def __init__(self, num_samples=512, seq_len=16, vocab_size=16, seed=0):
        rng = np.random.default_rng(seed)
        nxt = rng.integers(0, vocab_size, (vocab_size, 2))  # each token has two successors
        seqs = np.empty((num_samples, seq_len + 1), dtype=np.int64)
        seqs[:, 0] = rng.integers(0, vocab_size, num_samples)
        pick = rng.integers(0, 2, (num_samples, seq_len))
        for t in range(seq_len):
            seqs[:, t + 1] = nxt[seqs[:, t], pick[:, t]]
        self.seqs, self.vocab_size = seqs, vocab_size

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        return self.seqs[i, :-1], self.seqs[i, 1:]


def _image_info(ds):
    x, _ = ds[0]
    return tuple(np.shape(x._data if isinstance(x, Tensor) else x))


def build_datasets(data, seed):
    """(train, test, in_shape, num_classes, task) for the config's `data` section."""
    name, args, root = data.dataset, dict(data.args), data.root
    train_tf = build_transforms(data.transforms, train=True)
    test_tf = build_transforms(data.transforms, train=False)
    if name == "digits":
        train = datasets.Digits(train=True, transform=train_tf, split_seed=seed, **args)
        test = datasets.Digits(train=False, transform=test_tf, split_seed=seed, **args)
        return train, test, (1, 8, 8), 10, "classify"
    if name in ("mnist", "fashion_mnist", "cifar10", "cifar100"):
        cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST,
               "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
        train_tf = train_tf or transforms.ToTensor()
        test_tf = test_tf or transforms.ToTensor()
        train = cls(root, train=True, transform=train_tf, download=data.download, **args)
        test = cls(root, train=False, transform=test_tf, download=data.download, **args)
        classes = {"cifar100": 100}.get(name, 10)
        return train, test, _image_info(train), classes, "classify"
    if name == "synthetic":
        shape = tuple(args.pop("shape", (3, 32, 32)))
        classes = args.pop("num_classes", 10)
        n = args.pop("num_samples", 1024)
        train = datasets.SyntheticClassification(n, shape, classes, seed=seed, **args)
        test = datasets.SyntheticClassification(max(n // 4, 1), shape, classes, seed=seed + 1,
                                                **args)
        return train, test, shape, classes, "classify"
    if name == "synthetic_lm":
        train = SyntheticLM(seed=seed, **args)
        test = SyntheticLM(**{**args, "num_samples": max(args.get("num_samples", 512) // 4, 1)},
                           seed=seed)
        return train, test, (train.seqs.shape[1] - 1,), train.vocab_size, "lm"
    raise KeyError(name)


DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "synthetic",
            "synthetic_lm")

TRANSFORMS = {"to_tensor": transforms.ToTensor, "normalize": transforms.Normalize,
              "random_crop": transforms.RandomCrop,
              "random_horizontal_flip": transforms.RandomHorizontalFlip}
RANDOM_TRANSFORMS = {"random_crop", "random_horizontal_flip"}


def build_transforms(specs, train):
    """`["to_tensor", {"normalize": {"mean": [...], "std": [...]}}]` -> a Compose (random
    augmentations only when `train`), or None for an empty list."""
    out = []
    for spec in specs:
        name, kwargs = (spec, {}) if isinstance(spec, str) else next(iter(spec.items()))
        if name in RANDOM_TRANSFORMS and not train:
            continue
        out.append(TRANSFORMS[name](**(kwargs or {})))
    return transforms.Compose(out) if out else None


OPTIMIZERS = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
              "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad, "adadelta": optim.Adadelta,
              "nadam": optim.NAdam, "radam": optim.RAdam, "adamax": optim.Adamax,
              "asgd": optim.ASGD}
SCHEDULERS = {"step": lr_scheduler.StepLR, "multistep": lr_scheduler.MultiStepLR,
              "exponential": lr_scheduler.ExponentialLR,
              "cosine": lr_scheduler.CosineAnnealingLR, "linear": lr_scheduler.LinearLR,
              "onecycle": lr_scheduler.OneCycleLR, "plateau": lr_scheduler.ReduceLROnPlateau}


def lookup(table, name):
    """Case-insensitive lookup that also accepts class names (`CosineAnnealingLR`)."""
    key = name.lower()
    if key in table:
        return table[key]
    for cls in table.values():
        if cls.__name__.lower() == key:
            return cls
    raise KeyError(name)
