"""DDP communication hooks: how a gradient bucket is reduced (torch's `register_comm_hook`).

A hook is `hook(state, bucket) -> Future`; the Future's `wait()` returns the bucket's
averaged flat gradient tensor.
"""
from dtrain.autograd.grad_mode import no_grad
from dtrain.core import dtype as dtypes
from dtrain.distributed.collectives import all_reduce


class Future:
    """The result of an asynchronous bucket reduction: `wait()` gives the tensor."""

    def __init__(self, work, then):
        self._work, self._then = work, then

    def done(self):
        return self._work is None or self._work.is_completed()

    def wait(self):
        if self._work is not None:
            self._work.wait()
        return self._then()


class GradBucket:
    """What a comm hook sees: the flat gradient buffer of one bucket and its parameters."""

    def __init__(self, index, buffer, params, is_last):
        self._index, self._buffer, self._params, self._is_last = index, buffer, params, is_last

    def index(self):
        return self._index

    def buffer(self):
        return self._buffer

    def parameters(self):
        return list(self._params)

    def is_last(self):
        return self._is_last


def allreduce_hook(process_group, bucket):
    """The default: sum over ranks asynchronously, then divide by the world size."""
    buf = bucket.buffer()
    work = all_reduce(buf, group=process_group, async_op=True)
    size = process_group.size()

    def average():
        with no_grad():
            buf._data /= size
        return buf
    return Future(work, average)


def fp16_compress_hook(process_group, bucket):
    """Reduce a float16 copy of the bucket (half the bytes on the wire with NCCL), then
    cast back and divide by the world size."""
    buf = bucket.buffer()
    size = process_group.size()
    with no_grad():
        half = buf.to(dtypes.float16)
    work = all_reduce(half, group=process_group, async_op=True)

    def decompress():
        with no_grad():
            buf._data[...] = half._data
            buf._data /= size
        return buf
    return Future(work, decompress)
