"""Built-in data sets as `torchvision.datasets`, read from the standard files without pickle.

MNIST / FashionMNIST read the IDX files (plain or .gz) in `root/<Name>/raw`; CIFAR10 /
CIFAR100 read the *binary* versions in `root/cifar-10-batches-bin` / `root/cifar-100-binary`.
Each returns `(image, target)`: the image as a uint8 NumPy array, HxW (MNIST) or HxWxC
(CIFAR), the layout `transforms.ToTensor` expects (the part PIL images play in torchvision),
and the target as an int.

`download=True` fetches the standard files over HTTP(S) (or from the `url` / `mirrors` given
instead), verifies their checksums and unpacks them, once: processes sharing `root` (the ranks
of a job, on any number of nodes) take turns under a lock file there, so the first downloads
while the others wait and then find the files ready.
"""
import gzip
import os

import numpy as np

from dtrain.core.creation import from_numpy
from dtrain.data.dataset import Dataset
from dtrain.data.download import check_integrity, download_url, extract_archive, file_lock

# ---------------------------------------------------------------------------------------------
# Shared helpers


def _download_first(urls, path, md5):
    """Fetch `path` from the first of `urls` that works; raise RuntimeError naming every
    failure."""
    errors = []
    for url in urls:
        try:
            download_url(url, path, md5=md5)
            return
        except OSError as exc:  # URLError and timeouts too
            errors.append(f"{url}: {exc}")
        except RuntimeError as exc:  # a checksum mismatch, whose message names the URL
            errors.append(str(exc))
    raise RuntimeError(f"could not download {path} (fetch it by hand, or give a mirror):\n"
                       + "\n".join(errors))


def _not_found(path):
    return RuntimeError(f"Dataset not found: {path} is missing. You can use download=True to "
                        "download it")


class _ImageDataset(Dataset):
    """`(image, target)` pairs from `_sample(index)`, through `transform` / `target_transform`."""

    def __init__(self, root, train, transform, target_transform, download):
        self.root = None if root is None else os.fspath(root)
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        if download:
            self.download()

    def __getitem__(self, index):
        img, target = self._sample(index)
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __len__(self):
        return len(self.targets)


# ---------------------------------------------------------------------------------------------
# MNIST family (IDX files)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """The array stored in an IDX file (`.gz` files are decompressed on the fly)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4)) if ndim else ()
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX header says shape {dims} ({expected} bytes) but the file "
                         f"has {len(raw)} bytes; it is truncated or corrupted")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


class MNIST(_ImageDataset):
    """The MNIST handwritten digits: 60,000 training / 10,000 test 28x28 uint8 images.

    `data` is a uint8 tensor (N, 28, 28) and `targets` an int64 tensor (N,), as torchvision.
    `mirrors` (a list of base URLs, each ending in "/") replaces the class's `mirrors` for
    downloads; the files' checksums stay those of `resources`.
    """

    mirrors = ["https://ossci-datasets.s3.amazonaws.com/mnist/",
               "http://yann.lecun.com/exdb/mnist/"]
    resources = [("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                 ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                 ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                 ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")]
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five",
               "6 - six", "7 - seven", "8 - eight", "9 - nine"]

    def __init__(self, root, train=True, transform=None, target_transform=None,
                 download=False, *, mirrors=None):
        if mirrors is not None:
            self.mirrors = [mirrors] if isinstance(mirrors, str) else list(mirrors)
        super().__init__(root, train, transform, target_transform, download)
        prefix = "train" if train else "t10k"
        images = read_idx(self._raw_file(f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(self._raw_file(f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{self.raw_folder}: images of shape {images.shape} do not match "
                             f"labels of shape {labels.shape}")
        self.data = from_numpy(images.astype(np.uint8, copy=False))
        self.targets = from_numpy(labels.astype(np.int64))

    @property
    def raw_folder(self):
        return os.path.join(self.root, type(self).__name__, "raw")

    def _raw_file(self, name):
        for candidate in (name, name + ".gz"):
            path = os.path.join(self.raw_folder, candidate)
            if os.path.isfile(path):
                return path
        raise _not_found(os.path.join(self.raw_folder, name))

    def _invalid(self):
        """The (filename, md5) of `resources` without a valid copy in `raw_folder`."""
        return [(name, md5) for name, md5 in self.resources
                if not check_integrity(os.path.join(self.raw_folder, name), md5=md5)]

    def download(self):
        """Fetch the four .gz files into `raw_folder` unless valid copies are there."""
        if not self._invalid():
            return
        with file_lock(os.path.join(self.raw_folder, ".download.lock")):
            for name, md5 in self._invalid():  # fewer if another process fetched some
                _download_first([m + name for m in self.mirrors],
                                os.path.join(self.raw_folder, name), md5)

    def _sample(self, index):
        return self.data._data[index], int(self.targets._data[index])


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: the MNIST format with 10 clothing classes."""

    mirrors = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
    resources = [("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                 ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                 ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                 ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")]
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]


# ---------------------------------------------------------------------------------------------
# CIFAR (binary version)


def read_cifar_binary(path, label_bytes):
    """(labels (N, label_bytes) uint8, images (N, 32, 32, 3) uint8) from a CIFAR .bin file.

    Each record is `label_bytes` label bytes then 3072 pixel bytes: the 32x32 red plane, then
    green, then blue, each row-major.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    record = label_bytes + 3 * 32 * 32
    if raw.size == 0 or raw.size % record:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {record}-byte "
                         "CIFAR records; the file is truncated or corrupted")
    raw = raw.reshape(-1, record)
    images = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return raw[:, :label_bytes], np.ascontiguousarray(images)


class CIFAR10(_ImageDataset):
    """CIFAR-10: 50,000 training / 10,000 test 32x32 colour images in 10 classes.

    `data` is a uint8 array (N, 32, 32, 3) and `targets` a list of ints, as torchvision.
    `url` replaces the class's `url` for downloads (a mirror of the binary archive) and `md5`
    its checksum (needed only for an archive other than the official one).
    """

    base_folder = "cifar-10-batches-bin"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    filename = "cifar-10-binary.tar.gz"
    md5 = "c32a1d4ab5d03f1284b67883e8d87530"
    train_list = [f"data_batch_{i}.bin" for i in range(1, 6)]
    test_list = ["test_batch.bin"]
    label_bytes = 1
    num_classes = 10
    meta_file = "batches.meta.txt"

    def __init__(self, root, train=True, transform=None, target_transform=None,
                 download=False, *, url=None, md5=None):
        if url is not None:
            self.url = url
        if md5 is not None:
            self.md5 = md5
        super().__init__(root, train, transform, target_transform, download)
        labels, images = [], []
        for name in self.train_list if train else self.test_list:
            path = os.path.join(self.root, self.base_folder, name)
            if not os.path.isfile(path):
                raise _not_found(path)
            lab, img = read_cifar_binary(path, self.label_bytes)
            if lab.max() >= self.num_classes:  # the fine label is the last byte
                raise ValueError(f"{path}: label {lab.max()} out of range for "
                                 f"{type(self).__name__}; the file is corrupted")
            labels.append(lab)
            images.append(img)
        labels = np.concatenate(labels)
        self.data = np.concatenate(images)
        self.targets = labels[:, -1].astype(np.int64).tolist()
        self._labels = labels
        meta = os.path.join(self.root, self.base_folder, self.meta_file)
        if os.path.isfile(meta):
            with open(meta) as f:
                self.classes = [line.strip() for line in f if line.strip()]

    def _missing(self):
        """The data files not (yet) under `root`."""
        folder = os.path.join(self.root, self.base_folder)
        return [os.path.join(folder, n) for n in self.train_list + self.test_list
                if not os.path.isfile(os.path.join(folder, n))]

    def download(self):
        """Fetch and unpack the binary archive unless the data files are already there."""
        if not self._missing():
            return
        archive = os.path.join(self.root, self.filename)
        with file_lock(archive + ".lock"):
            if not self._missing():  # another process unpacked them while this one waited
                return
            if not check_integrity(archive, md5=self.md5):
                _download_first([self.url], archive, self.md5)
            extract_archive(archive, self.root)
        missing = self._missing()
        if missing:
            raise RuntimeError(f"{archive} (from {self.url}) does not hold {missing[0]}: it "
                               f"is not the binary version of {type(self).__name__} (the "
                               f"official one is {type(self).url})")

    def _sample(self, index):
        return self.data[index], self.targets[index]


class CIFAR100(CIFAR10):
    """CIFAR-100: as CIFAR-10 with 100 fine classes; `targets` are the fine labels and
    `coarse_targets` the 20 superclasses (each record holds both)."""

    base_folder = "cifar-100-binary"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    filename = "cifar-100-binary.tar.gz"
    md5 = "03b5dce01913d631647c71ecec9e9cb8"
    train_list = ["train.bin"]
    test_list = ["test.bin"]
    label_bytes = 2
    num_classes = 100
    meta_file = "fine_label_names.txt"

    @property
    def coarse_targets(self):
        return self._labels[:, 0].astype(np.int64).tolist()


# ---------------------------------------------------------------------------------------------
# Data sets that need no files


class Digits(_ImageDataset):
    """The 8x8 handwritten digits shipped with scikit-learn (1797 images, classes 0-9).

    Needs no download (install the `digits` extra: scikit-learn). Images are float32
    (1, 8, 8) in [0, 1] (the 0-16 ink counts divided by 16), targets ints. `train=None`
    gives all samples; True / False give a deterministic split of a `test_fraction` test
    part, fixed by `split_seed`.
    """

    def __init__(self, train=None, transform=None, target_transform=None, test_fraction=0.2,
                 split_seed=0):
        try:
            from sklearn.datasets import load_digits
        except ImportError as exc:
            raise ImportError("Digits needs scikit-learn: pip install 'dtrain[digits]' (or "
                              "pip install scikit-learn)") from exc
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        bunch = load_digits()
        images = (bunch.images / 16).astype(np.float32)[:, None]
        targets = bunch.target.astype(np.int64)
        if train is not None:
            order = np.random.default_rng(split_seed).permutation(len(targets))
            n_test = round(len(targets) * test_fraction)
            keep = np.sort(order[n_test:] if train else order[:n_test])
            images, targets = images[keep], targets[keep]
        super().__init__(None, train, transform, target_transform, download=False)
        self.data = images
        self.targets = targets

    def _sample(self, index):
        return self.data[index], int(self.targets[index])


class SyntheticClassification(Dataset):
    """`num_samples` random float32 samples of `shape` in `num_classes` Gaussian classes.

    Sample i is generated on demand from `(seed, i)` alone: no memory, the same values in
    every process and whatever the order of access. Each class has its own random mean, so
    the task is learnable. For benchmarks and smoke tests.
    """

    def __init__(self, num_samples, shape, num_classes, seed=0):
        if num_samples < 0 or num_classes < 1:
            raise ValueError(f"need num_samples >= 0 and num_classes >= 1, got {num_samples} "
                             f"and {num_classes}")
        self.num_samples = num_samples
        self.shape = tuple(shape)
        self.num_classes = num_classes
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.targets = rng.integers(0, num_classes, num_samples)
        self._means = rng.standard_normal((num_classes, *self.shape), dtype=np.float32)

    def __getitem__(self, index):
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} is out of range for {self.num_samples} samples")
        index %= self.num_samples
        target = int(self.targets[index])
        rng = np.random.default_rng((self.seed, index))
        return rng.standard_normal(self.shape, dtype=np.float32) + self._means[target], target

    def __len__(self):
        return self.num_samples
