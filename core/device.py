"""Devices named as in PyTorch: "cpu", "cuda", "cuda:N"."""


class device:
    """`dt.device("cuda:1")`, `dt.device("cuda", 1)`, `dt.device("cpu")`."""

    __slots__ = ("type", "index")

    def __init__(self, spec, index=None):
        if isinstance(spec, device):
            self.type, self.index = spec.type, spec.index if index is None else index
            return
        if isinstance(spec, int) and not isinstance(spec, bool):
            spec, index = "cuda", spec
        if not isinstance(spec, str):
            raise TypeError(f"device() expects a string such as 'cpu' or 'cuda:0', got {spec!r}")
        kind, _, num = spec.partition(":")
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device "
                               f"string: {spec}")
        if num:
            if index is not None or not num.isdigit():
                raise RuntimeError(f"Invalid device string: '{spec}'")
            index = int(num)
        if kind == "cpu" and index not in (None, 0):
            raise RuntimeError(f"cpu device has no index {index}")
        self.type, self.index = kind, None if kind == "cpu" else index

    def __eq__(self, other):
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"


CPU = device("cpu")
