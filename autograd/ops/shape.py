"""Shape ops: views (reshape, permute, expand, ...), joins and splits, padding, copies."""
import itertools
import math

from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import norm_dim, norm_dims
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core.backend import array_module, stored_channels_last
from dtrain.core.tensor import Size, Tensor


def _samples(name, *cases):
    """cases: (fn, shape, ...) tuples; each shape becomes one random input."""
    def samples():
        s = SampleMaker(name)
        return [Sample(fn, tuple(s(*shape) for shape in shapes)) for fn, *shapes in cases]
    return samples


@register("reshape", _samples("reshape", (lambda x: x.reshape(4, 3), (3, 4)),
                              (lambda x: x.reshape(-1), (2, 3, 2)),
                              (lambda x: x.view(2, 1, 3), (6,))))
class Reshape(Op):
    is_view = True

    def forward(self, x, shape, out=None):
        self.in_shape = x.shape
        if out is not None:  # graph mode plans a reshape that copied (memory_plan.py's COPY)
            array_module(x).copyto(out.reshape(x.shape), x)
            return out
        try:
            return x.reshape(shape)
        except ValueError:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size "
                               f"{x.size}") from None

    def backward(self, g):
        return (g.reshape(self.in_shape), None)


@register("permute", _samples("permute", (lambda x: x.permute(2, 0, 1), (2, 3, 4)),
                              (lambda x: x.transpose(0, 1), (3, 4)),
                              (lambda x: x.mT, (2, 3, 4))))
class Permute(Op):
    is_view = True

    def forward(self, x, dims):
        self.dims = dims
        return array_module(x).transpose(x, dims)

    def backward(self, g):
        inverse = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inverse[d] = i
        return (g.permute(*inverse), None)


@register("expand", _samples("expand", (lambda x: x.expand(2, 3, 4), (3, 1)),
                             (lambda x: x.expand(-1, 5), (3, 1))))
class Expand(Op):
    is_view = True

    def forward(self, x, shape):
        self.in_shape = x.shape
        return array_module(x).broadcast_to(x, shape)

    def backward(self, g):
        return (g.sum_to_size(self.in_shape), None)


@register("sum_to_size", _samples("sum_to_size", (lambda x: x.sum_to_size(3, 1), (2, 3, 4)),
                                  (lambda x: x.sum_to_size(4), (3, 4))))
class SumToSize(Op):
    def forward(self, x, shape, out=None):
        self.in_shape = x.shape
        lead = x.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                          if s == 1 and x.shape[lead + i] != 1)
        if out is not None:  # graph mode plans a sum_to_size that copied (memory_plan.py)
            kept = tuple(1 if i in axes else n for i, n in enumerate(x.shape))
            array_module(x).sum(x, axis=axes, keepdims=True, out=out.reshape(kept))
            return out
        summed = x.sum(axis=axes, keepdims=True) if axes else x
        return summed.reshape(shape)

    def backward(self, g):
        return (g.expand(self.in_shape), None)


def expandable(size, shape):
    """Whether `size` broadcasts to `shape` (so that `shape` can be summed down to it)."""
    return len(size) <= len(shape) and all(s in (1, shape[len(shape) - len(size) + i])
                                           for i, s in enumerate(size))


def _cat_samples():
    s = SampleMaker("cat")
    return [Sample(lambda a, b: cat([a, b]), (s(2, 3), s(4, 3))),
            Sample(lambda a, b, c: cat([a, b, c], dim=-1), (s(2, 1), s(2, 3), s(2, 2))),
            Sample(lambda a, b: stack([a, b], dim=1), (s(2, 3), s(2, 3)))]


@register("cat", _cat_samples)
class Cat(Op):
    def forward(self, *arrays, dim):
        self.dim = dim
        self.sizes = [a.shape[dim] for a in arrays]
        return array_module(arrays[0]).concatenate(arrays, axis=dim)

    def backward(self, g):
        return tuple(g.split(self.sizes, self.dim))


def _split_samples():
    s = SampleMaker("split")
    return [Sample(lambda x: split(x, 2, 1), (s(3, 5),)),
            Sample(lambda x: chunk(x, 3, 0)[2] * 2, (s(5, 2),)),
            Sample(lambda x: unbind(x, 1)[0], (s(2, 3),)),
            Sample(lambda x: split(x, [1, 3], -1)[1], (s(2, 4),))]


@register("split", _split_samples)
class Split(Op):
    """Consecutive views of `x` along `dim` with the given sizes: one node, whose backward
    concatenates the pieces' gradients (zeros for pieces that got none). NOTE: one op
    instead of one slice each keeps backward O(size), not O(pieces x size)."""

    is_view = True

    @property
    def n_outputs(self):  # per instance: the number of pieces
        return len(self.sizes)

    def forward(self, x, sizes, dim):
        self.sizes, self.dim, self.in_shape, self.dtype = sizes, dim, x.shape, x.dtype
        out, start = [], 0
        lead = (slice(None),) * dim
        for n in sizes:
            out.append(x[lead + (slice(start, start + n),)])
            start += n
        return tuple(out)

    def backward(self, *grads):
        present = next(g for g in grads if g is not None)
        xp = array_module(present._data)
        parts = []
        for g, n in zip(grads, self.sizes):
            if g is None:
                shape = self.in_shape[:self.dim] + (n,) + self.in_shape[self.dim + 1:]
                g = Tensor._make(xp.zeros(shape, dtype=self.dtype))
            parts.append(g)
        return (cat(parts, self.dim), None, None)


def _pad_samples():
    s = SampleMaker("pad")
    return [Sample(lambda x: pad(x, (1, 2)), (s(3, 4),)),
            Sample(lambda x: pad(x, (0, 1, 2, 0), value=0.5), (s(2, 3, 2),)),
            Sample(lambda x: pad(x, (-1, 2, 1, -2)), (s(2, 4, 5),))]


@register("pad", _pad_samples)
class Pad(Op):
    """Constant padding; a negative width crops. Its adjoint is the opposite padding."""

    def forward(self, x, pad, value):
        xp = array_module(x)
        self.pad = pad
        widths = [(0, 0)] * (x.ndim - len(pad) // 2)
        widths += [(pad[2 * i], pad[2 * i + 1]) for i in reversed(range(len(pad) // 2))]
        crop = tuple(slice(max(-lo, 0), n - max(-hi, 0)) for (lo, hi), n in zip(widths, x.shape))
        return xp.pad(x[crop], [(max(lo, 0), max(hi, 0)) for lo, hi in widths],
                      constant_values=value)

    def backward(self, g):
        return (Pad.apply(g, tuple(-p for p in self.pad), 0), None, None)


def _pad_mode_samples():
    s = SampleMaker("pad_modes")
    cases = [("reflect", (2, 1), (2, 4)), ("reflect", (-1, 2, 2, -1), (1, 2, 3, 4)),
             ("replicate", (3, 0), (1, 2, 3)), ("replicate", (1, -2, -1, 2, 2, 0), (1, 1, 3, 4, 3)),
             ("circular", (2, 1), (2, 3)), ("circular", (-1, 2, 1, -1), (1, 2, 3, 4))]
    return [Sample(lambda x, p=p, m=m: pad(x, p, m), (s(*shape),)) for m, p, shape in cases]


register_composite("pad_modes", _pad_mode_samples)


def _source_index(xp, mode, n, lo, hi):
    """For one padded dim of size `n`: the input position each output position reads."""
    if mode == "circular":  # as PyTorch: crop first, then wrap around what is left
        start = max(-lo, 0)
        kept = n - start - max(-hi, 0)
        return start + (xp.arange(n + lo + hi) - max(lo, 0)) % kept
    k = xp.arange(-lo, n + hi)  # positions in the uncropped input's coordinates
    if mode == "replicate":
        return xp.clip(k, 0, n - 1)
    k = xp.abs(k)  # reflect: mirror at both edges, the edge itself not repeated
    return xp.where(k < n, k, 2 * (n - 1) - k)


_PAD_DIMS = {1: (2, 3), 2: (3, 4), 3: (4, 5)}  # padded dims -> allowed input ndims
_DIM_NAMES = ("D", "H", "W")


def _check_pad_mode(shape, pad, mode):
    """The padded dims' sizes and (lo, hi) pads, first dim first, checked as PyTorch does."""
    k = len(pad) // 2
    if len(shape) not in _PAD_DIMS.get(k, ()):
        raise NotImplementedError("Only 2D, 3D, 4D, 5D padding with non-constant padding are "
                                  f"supported for now (got a pad of length {len(pad)} for a "
                                  f"{len(shape)}-D input)")
    sizes = shape[-k:]
    pairs = [(pad[2 * (k - 1 - i)], pad[2 * (k - 1 - i) + 1]) for i in range(k)]
    for d, (n, (lo, hi)) in enumerate(zip(sizes, pairs)):
        if mode == "reflect" and not (lo < n and hi < n):
            raise RuntimeError(f"Argument #4: Padding size should be less than the corresponding "
                               f"input dimension, but got: padding ({lo}, {hi}) at dimension "
                               f"{len(shape) - k + d} of input {list(shape)}")
        if mode == "circular" and not (lo <= n + min(hi, 0) and hi <= n + min(lo, 0)):
            raise RuntimeError(f"Padding value causes wrapping around more than once (padding "
                               f"({lo}, {hi}) at dimension {len(shape) - k + d} of input "
                               f"{list(shape)}).")
    out = [n + lo + hi for n, (lo, hi) in zip(sizes, pairs)]
    if any(o < (0 if mode == "circular" else 1) for o in out):
        names = _DIM_NAMES[-k:]
        raise RuntimeError(f"input ({', '.join(f'{a}: {n}' for a, n in zip(names, sizes))}) is "
                           f"too small. Calculated output "
                           f"{', '.join(f'{a}: {o}' for a, o in zip(names, out))}")
    return sizes, pairs


@register("clone", _samples("clone", (lambda x: x.clone(), (3, 4)),
                            (lambda x: x.mT.contiguous(), (3, 4))))
class Clone(Op):
    def forward(self, x):
        return array_module(x).array(x, copy=True, order="C")

    def backward(self, g):
        return (g,)


# -- public functions -------------------------------------------------------------------
def _size_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def broadcast_shapes(*shapes):
    """The shape that tensors of `shapes` broadcast to (a Size); ints count as 1-d shapes."""
    shapes = [(s,) if isinstance(s, int) else tuple(s) for s in shapes]
    out = []
    for dims in itertools.zip_longest(*(reversed(s) for s in shapes), fillvalue=1):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise RuntimeError(f"Shape mismatch: objects cannot be broadcast to a single shape: "
                               f"{[list(s) for s in shapes]}")
        out.append(sizes.pop() if sizes else 1)
    return Size(reversed(out))


def reshape(input, *shape):
    """input with a new shape of the same number of elements (-1 is inferred); a view when it can
    be."""
    shape = _size_args(shape)
    if shape == input._data.shape:
        return input
    return Reshape.apply(input, shape)


def view(input, *shape):
    """Reshape without copying; an error (as in PyTorch) when the strides do not allow it.

    NOTE: an (N, C, *s) activation that dtrain's conv/pool kernels keep channels-last, where
    PyTorch's would be contiguous, is copied instead (as `reshape`), so that the ubiquitous
    `x.view(-1, C * H * W)` after a conv works as in PyTorch; that result does not share
    memory with x."""
    out = reshape(input, *shape)
    owner, d = out._data.base, input._data
    if out is not input and out._data.size and not (owner is d or (owner is not None
                                                                  and owner is d.base)) \
            and not stored_channels_last(d):
        raise RuntimeError("view size is not compatible with input tensor's size and stride (at "
                           "least one dimension spans across two contiguous subspaces). Use "
                           ".reshape(...) instead.")
    return out


def flatten(input, start_dim=0, end_dim=-1):
    """input with dims start_dim..end_dim merged into one (a 0-d input gives shape (1,))."""
    nd = input._data.ndim
    if nd == 0:
        return reshape(input, 1)
    s, e = norm_dim(start_dim, nd, "flatten"), norm_dim(end_dim, nd, "flatten")
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shape = input._data.shape
    return reshape(input, shape[:s] + (math.prod(shape[s:e + 1]),) + shape[e + 1:])


def unflatten(input, dim, sizes):
    """input with `dim` split into `sizes` (their product equals that dim's size)."""
    d = norm_dim(dim, input._data.ndim, "unflatten")
    shape = input._data.shape
    return reshape(input, shape[:d] + tuple(sizes) + shape[d + 1:])


def permute(input, *dims):
    """A view with the dims reordered: out.shape[i] = input.shape[dims[i]]."""
    dims = _size_args(dims)
    if len(dims) != input._data.ndim:
        raise RuntimeError(f"permute(): number of dims don't match: input.dim() = "
                           f"{input._data.ndim} is not equal to len(dims) = {len(dims)}")
    norm_dims(dims, input._data.ndim, "permute")  # range and repeats
    dims = tuple(norm_dim(d, input._data.ndim, "permute") for d in dims)
    return Permute.apply(input, dims)


def transpose(input, dim0, dim1):
    """A view with dims dim0 and dim1 swapped."""
    nd = input._data.ndim
    if nd < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return input
    d0, d1 = norm_dim(dim0, nd, "transpose"), norm_dim(dim1, nd, "transpose")
    dims = list(range(nd))
    dims[d0], dims[d1] = d1, d0
    return Permute.apply(input, tuple(dims))


swapaxes = swapdims = transpose


def t(input):
    """The transpose of a matrix (n, m) -> (m, n); 0-D and 1-D input is returned as is."""
    if input._data.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                           f"{input._data.ndim}D")
    return transpose(input, 0, -1) if input._data.ndim == 2 else input


def squeeze(input, dim=None):
    """input without its size-1 dims (only those among `dim`, when given)."""
    shape = input._data.shape
    if dim is None:
        return reshape(input, tuple(s for s in shape if s != 1))
    dims = norm_dims(dim, input._data.ndim, "squeeze")
    return reshape(input, tuple(s for i, s in enumerate(shape) if not (i in dims and s == 1)))


def unsqueeze(input, dim):
    """A view with a size-1 dim inserted at `dim`."""
    d = norm_dim(dim, input._data.ndim + 1, "unsqueeze")
    shape = input._data.shape
    return reshape(input, shape[:d] + (1,) + shape[d:])


def expand(input, *sizes):
    """A broadcast view to `sizes` (-1 keeps a dim; size-1 dims repeat without copying)."""
    sizes = _size_args(sizes)
    shape = input._data.shape
    if len(sizes) < len(shape):
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater "
                           f"or equal to the number of dimensions in the tensor ({len(shape)})")
    lead = len(sizes) - len(shape)
    target = list(sizes)
    for i, s in enumerate(shape):
        want = sizes[lead + i]
        if want == -1:
            target[lead + i] = s
        elif s != want and s != 1:
            raise RuntimeError(f"The expanded size of the tensor ({want}) must match the existing "
                               f"size ({s}) at non-singleton dimension {lead + i}.  Target sizes: "
                               f"{list(sizes)}.  Tensor sizes: {list(shape)}")
    target = tuple(target)
    return input if target == shape else Expand.apply(input, target)


def broadcast_to(input, size):
    """input broadcast to `size` (as expand)."""
    return expand(input, *size)


def expand_as(input, other):
    """input broadcast to other's shape (as expand)."""
    return expand(input, *other._data.shape)


def sum_to_size(input, *size):
    """input summed down to `size`, which broadcasts to input's shape."""
    size = _size_args(size)
    if size == input._data.shape:
        return input
    shape = input._data.shape
    if not expandable(size, shape):
        raise RuntimeError(f"size {list(size)} is not expandable to size {list(shape)}")
    return SumToSize.apply(input, size)


def cat(tensors, dim=0):
    """Tensors joined along an existing `dim` (equal sizes elsewhere)."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("cat(): expected a non-empty list of Tensors")
    ref = tensors[0]._data
    d = norm_dim(dim, ref.ndim, "cat")
    for i, t in enumerate(tensors[1:], 1):
        s = t._data.shape
        if len(s) != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(s, ref.shape))
                                     if j != d):
            raise RuntimeError(f"cat(): Sizes of tensors must match except in dimension {d}. "
                               f"Expected size {list(ref.shape)} (except dim {d}) but got size "
                               f"{list(s)} for tensor number {i} in the list.")
    return Cat.apply(*tensors, dim=d)


concat = concatenate = cat


def stack(tensors, dim=0):
    """Tensors of one shape joined along a new `dim`: (n tensors of S) -> S with n at dim."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    shape = tensors[0]._data.shape
    for i, t in enumerate(tensors):
        if t._data.shape != shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shape)}"
                               f" at entry 0 and {list(t._data.shape)} at entry {i}")
    d = norm_dim(dim, len(shape) + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)


def narrow(input, dim, start, length):
    """A view of `length` entries from `start` along `dim`."""
    d = norm_dim(dim, input._data.ndim, "narrow")
    return input[(slice(None),) * d + (slice(start, start + length),)]


def split(tensor, split_size_or_sections, dim=0):
    """Views of consecutive pieces along `dim`: equal pieces of a size, or given sizes."""
    d = norm_dim(dim, tensor._data.ndim, "split")
    n = tensor._data.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        sizes = [min(step, n - i) for i in range(0, n, step)] if step else [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} "
                               f"(input tensor's size at dimension {d}), but got split_sizes="
                               f"{sizes}")
    return Split.apply(tensor, tuple(sizes), d)


def chunk(input, chunks, dim=0):
    """`chunks` views of (nearly) equal size along `dim`; the last may be smaller."""
    d = norm_dim(dim, input._data.ndim, "chunk")
    n = input._data.shape[d]
    return split(input, max(1, -(-n // chunks)), d)


def unbind(input, dim=0):
    """The slices along `dim`, each without that dim."""
    d = norm_dim(dim, input._data.ndim, "unbind")
    shape = input._data.shape[:d] + input._data.shape[d + 1:]
    return tuple(p.reshape(shape) for p in split(input, 1, d))


def pad(input, pad, mode="constant", value=None):
    """PyTorch's F.pad: `pad=(left, right, top, bottom, front, back)` pads the last
    len(pad) // 2 dims, last dim first; a negative width crops. Modes: 'constant' (fills
    `value`, any dims), 'reflect', 'replicate', 'circular' (the last 1-3 dims of a batched or
    unbatched input: 2-3-D for 1 dim, 3-4-D for 2, 4-5-D for 3)."""
    shape, pad = input._data.shape, tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError(f"Padding length must be divisible by 2, got {len(pad)}")
    if len(pad) > 2 * len(shape):
        raise RuntimeError(f"Padding length should be less than or equal to two times the input "
                           f"dimension but got padding length {len(pad)} and input of dimension "
                           f"{len(shape)}")
    if mode == "constant":
        for i in range(len(pad) // 2):
            n, lo, hi = shape[-1 - i], pad[2 * i], pad[2 * i + 1]
            if n + lo + hi < 0:
                raise RuntimeError(f"The input size {n}, plus negative padding {lo} and {hi} "
                                   f"resulted in a negative output size, which is invalid. Check "
                                   f"dimension {len(shape) - 1 - i} of your input.")
        return Pad.apply(input, pad, 0 if value is None else value)
    if mode not in ("reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode!r} (expected 'constant', "
                                  f"'reflect', 'replicate' or 'circular')")
    if value:
        raise RuntimeError(f'Padding mode "{mode}" doesn\'t take in value argument')
    xp = array_module(input._data)
    sizes, pairs = _check_pad_mode(shape, pad, mode)
    index = [_source_index(xp, mode, n, lo, hi) for n, (lo, hi) in zip(sizes, pairs)]
    # NOTE: one gather with broadcast index arrays (an open mesh) pads every dim at once;
    # its backward scatter-adds each output gradient back to the position it was read from.
    k = len(index)
    return input[(Ellipsis,) + tuple(i.reshape((-1,) + (1,) * (k - 1 - d))
                                     for d, i in enumerate(index))]


def clone(input):
    """A copy of input that stays in the graph (gradients flow back to input)."""
    return Clone.apply(input)


def contiguous(input):
    """input in C order: itself when it already is, else a copy."""
    return input if input._data.flags.c_contiguous else Clone.apply(input)
