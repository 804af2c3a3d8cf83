"""Random draws: from tensors of parameters (bernoulli, multinomial, normal, poisson), new
tensors (rand, randn, randint, randperm, for core.creation) and in-place fills (uniform_,
normal_...).

One op without gradient (as in PyTorch, whose derivatives of these are zero) that draws
from dtrain's generators: `generator=` or the default one of the device, so that
`manual_seed` repeats a run and dtrain.jit records every draw and replays it anew."""
import numpy as np

from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.node import Op
from dtrain.autograd.registry import Sample, SampleMaker, register
from dtrain.core import backend, creation
from dtrain.core import random as rnd
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor


def _bernoulli(rng, x, p=None):
    return (rng.random(x.shape) < (x if p is None else p)).astype(x.dtype)


def _poisson(rng, rates):
    return rng.poisson(rates).astype(rates.dtype)


def _normal(rng, mean, std):
    arrays = [a for a in (mean, std) if hasattr(a, "dtype")]
    xp = array_module(arrays[0])
    shape = xp.broadcast(*arrays).shape
    dtype = xp.result_type(*arrays)
    return (rng.standard_normal(shape) * std + mean).astype(dtype, copy=False)


def _multinomial(rng, probs, num_samples, replacement):
    xp = array_module(probs)
    p = probs.reshape(-1, probs.shape[-1]).astype(xp.float64)
    rows, k = p.shape
    if replacement:
        # Inverse CDF for all rows in one searchsorted: row r's CDF (ending at 1) is shifted
        # by r, and so are its uniforms. A uniform that rounds up onto the top of its row is
        # kept in the row's last category of non-zero probability.
        cdf = xp.cumsum(p, axis=1)
        cdf /= cdf[:, -1:]
        shift = xp.arange(rows, dtype=xp.float64)[:, None]
        u = rng.random((rows, num_samples)) + shift
        flat = xp.searchsorted((cdf + shift).ravel(), u.ravel(), side="right")
        idx = flat.reshape(rows, num_samples) - xp.arange(rows)[:, None] * k
        last = k - 1 - xp.argmax(p[:, ::-1] > 0, axis=1)
        idx = xp.minimum(idx, last[:, None])
    else:
        # NOTE: without replacement, the exponential race (Gumbel-top-k): the categories
        # with the smallest E_i / p_i, E_i ~ Exp(1), are an ordered draw without replacement
        # with probabilities p; one sort per row, no loop over draws.
        keys = xp.where(p > 0, rng.standard_exponential(p.shape) / xp.where(p > 0, p, 1.0),
                        xp.inf)
        idx = xp.argsort(keys, axis=1)[:, :num_samples]
    return idx.reshape(probs.shape[:-1] + (num_samples,)).astype(xp.int64)


# -- new tensors (rand, randn, randint, randperm and their _like forms) -----------------------
def _uniform_floats(rng, *, shape, dtype):
    return rng.random(shape, dtype=np.float64).astype(dtype, copy=False)


def _normal_floats(rng, *, shape, dtype):
    return rng.standard_normal(shape, dtype=np.float64).astype(dtype, copy=False)


def _integers(rng, *, shape, dtype, low, high):
    return rng.integers(low, high, shape).astype(dtype, copy=False)


def _permutation(rng, *, n, dtype):
    # argsort of uniforms: the generator methods used here exist in NumPy and CuPy alike
    return rng.random(n).argsort().astype(dtype, copy=False)


# -- in-place fills (Tensor.uniform_, normal_...): `like` is self's array ------------------------
def _uniform(rng, like, a=0.0, b=1.0):
    """Fill self in place with samples from the uniform distribution on [a, b)."""
    return rng.random(like.shape) * (b - a) + a


def _normal_fill(rng, like, mean=0.0, std=1.0):
    """Fill self in place with samples from N(mean, std**2)."""
    return rng.standard_normal(like.shape) * std + mean


def _bernoulli_fill(rng, like, p=0.5):
    """Fill self in place with 1 with probability p (a number or a tensor), else 0."""
    check_probability("bernoulli_", p)
    return rng.random(like.shape) < p


def _exponential(rng, like, lambd=1.0):
    """Fill self in place with samples from the exponential distribution of rate lambd."""
    if not lambd > 0:
        raise RuntimeError(f"exponential_ expects lambda > 0.0, but found lambda={lambd}")
    return rng.standard_exponential(like.shape) / lambd


def _geometric(rng, like, p):
    """Fill self in place with the number of Bernoulli(p) trials up to the first success."""
    if not 0 < p < 1:
        raise RuntimeError(f"geometric_ expects p to be in (0, 1), but got p={p}")
    return rng.geometric(p, like.shape)


def _cauchy(rng, like, median=0.0, sigma=1.0):
    """Fill self in place with samples from the Cauchy distribution (median, sigma)."""
    # a ratio of independent standard normals is standard Cauchy (CuPy has no cauchy)
    return median + sigma * (rng.standard_normal(like.shape) / rng.standard_normal(like.shape))


def _log_normal(rng, like, mean=1.0, std=2.0):
    """Fill self in place with exp of samples from N(mean, std**2)."""
    z = rng.standard_normal(like.shape) * std + mean
    return array_module(z).exp(z)


def _random(rng, like, *bounds, to=None):
    """Fill self in place with integers: `random_(to)` in [0, to), `random_(from, to)` in
    [from, to); with no `to`, up to 2**mantissa for floats (every integer exact) and the
    dtype's max for integers, as torch.random_."""
    low, high = (0, bounds[0]) if len(bounds) == 1 and to is None else (
        bounds[0] if bounds else 0, bounds[1] if len(bounds) == 2 else to)
    if high is not None:
        if low >= high:
            raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got "
                               f"from={low} >= to={high}")
        return rng.integers(low, high, like.shape)
    kind = like.dtype.kind
    top = (2 ** (np.finfo(like.dtype).nmant + 1) if kind == "f" else 1 if kind == "b" else
           int(np.iinfo(like.dtype).max))
    return rng.integers(low, top, like.shape, endpoint=True)


FILLS = {"uniform_": _uniform, "normal_": _normal_fill, "bernoulli_": _bernoulli_fill,
         "exponential_": _exponential, "geometric_": _geometric, "cauchy_": _cauchy,
         "log_normal_": _log_normal, "random_": _random}
SAMPLERS = {"bernoulli": _bernoulli, "poisson": _poisson, "normal": _normal,
            "multinomial": _multinomial, "rand": _uniform_floats, "randn": _normal_floats,
            "randint": _integers, "randperm": _permutation, **FILLS}


def _draw_samples():
    s = SampleMaker("draw")

    def seeded(kind, **options):
        def fn(*args):
            rnd.manual_seed(11)  # the same draw on every call
            return Draw.apply(*args, kind=kind, **options)
        return fn
    probs = s(2, 5, low=0.0, grad=False)
    cpu = backend.normalize_device("cpu")
    return [Sample(seeded("bernoulli"), (s(3, 4, low=0.0, grad=False),)),
            Sample(seeded("bernoulli", p=0.3), (s(3, 4, grad=False),)),
            Sample(seeded("poisson"), (s(3, 4, low=0.0, high=5.0, grad=False),)),
            Sample(seeded("normal"), (s(3, 1, grad=False), s(4, low=0.1, grad=False))),
            Sample(seeded("multinomial", num_samples=7, replacement=True), (probs,)),
            Sample(seeded("multinomial", num_samples=3, replacement=False), (probs,)),
            Sample(seeded("rand", shape=(3, 4), dtype=np.dtype("float32"), device=cpu), ()),
            Sample(seeded("randn", shape=(2, 3), dtype=np.dtype("float64"), device=cpu), ()),
            Sample(seeded("randint", shape=(5,), dtype=np.dtype("int64"), low=2, high=9,
                          device=cpu), ()),
            Sample(seeded("randperm", n=6, dtype=np.dtype("int64"), device=cpu), ())] + [
        Sample(seeded(kind, **({"p": 0.3} if kind == "geometric_" else {})),
               (s(2, 3, grad=False),)) for kind in FILLS]


@register("draw", _draw_samples, differentiable=False)
class Draw(Op):
    """A random draw `SAMPLERS[kind](rng, *args, **options)` from the generator's backend
    generator (`generator`, or the default one of `device`, else of the first tensor's):
    every random tensor dtrain makes is one, so that graph mode replays draw anew."""

    differentiable = False
    random = True

    def forward(self, *args, kind, generator=None, device=None, **options):
        dev = device or backend.device_of(next(a for a in args if hasattr(a, "dtype")))
        with backend.device_context(dev):
            return SAMPLERS[kind](rnd.generator_for(generator, dev).rng, *args, **options)


def check_probability(name, p):
    """PyTorch's error for a probability (a float, a tensor or an array of them) outside
    [0, 1]."""
    if isinstance(p, Tensor):
        p = p._data
    if hasattr(p, "shape"):
        if not bool(((p >= 0) & (p <= 1)).all()):
            raise RuntimeError(f"{name}: all probabilities p must be in [0, 1]")
    elif not 0 <= p <= 1:
        raise RuntimeError(f"{name} expects p to be in [0, 1], but got p={p}")


def bernoulli(input, p=None, *, generator=None):
    """0/1 draws of `input`'s shape and dtype, 1 with probability `input` (elementwise) or,
    given `p`, with probability p."""
    check_probability("bernoulli", input if p is None else p)
    return Draw.apply(input, kind="bernoulli", generator=generator,
                      **({} if p is None else {"p": p}))


def poisson(input, generator=None):
    """Poisson draws with rates `input` (same shape and dtype)."""
    if not bool((input._data >= 0).all()):
        raise RuntimeError("poisson: expected non-negative rates, but got negative values")
    return Draw.apply(input, kind="poisson", generator=generator)


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Category indices (int64) drawn from the non-negative weights in the last dim of a
    1-d (k,) or 2-d (n, k) `input`: shape (num_samples,) or (n, num_samples)."""
    probs = input._data
    if probs.ndim not in (1, 2):
        raise RuntimeError(f"prob_dist must be 1 or 2 dim, got {probs.ndim}")
    if probs.dtype.kind != "f":
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got: "
                           f"{input.dtype}")
    if num_samples <= 0:
        raise RuntimeError(f"cannot sample n_sample <= 0 samples (got {num_samples})")
    if not replacement and num_samples > probs.shape[-1]:
        raise RuntimeError(f"cannot sample n_sample > prob_dist.size(-1) samples without "
                           f"replacement ({num_samples} > {probs.shape[-1]})")
    xp = array_module(probs)
    if not bool((xp.isfinite(probs) & (probs >= 0)).all()):
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    if not bool((probs.sum(-1) > 0).all()):
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    if not replacement and not bool(((probs > 0).sum(-1) >= num_samples).all()):
        raise RuntimeError("invalid multinomial distribution (with replacement=False, not "
                           "enough non-negative category to sample)")
    return Draw.apply(input, kind="multinomial", num_samples=int(num_samples),
                      replacement=bool(replacement), generator=generator)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, dtype=None, device=None,
           requires_grad=False):
    """Normal draws: `normal(mean, std)` with tensors (broadcast) or a tensor and a float,
    or `normal(mean, std, size)` with floats."""
    tensors = [a for a in (mean, std) if isinstance(a, Tensor)]
    if not tensors:
        if size is None:
            raise TypeError("normal(): with a float mean and std, give the size: "
                            "normal(mean, std, size)")
        if std < 0:
            raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
        out = creation.randn(size, generator=generator, dtype=dtype, device=device)
        with no_grad():
            out.mul_(std).add_(mean)
        return out.requires_grad_(requires_grad)
    if size is not None:
        raise TypeError("normal(): size is only taken with a float mean and std")
    if isinstance(std, Tensor) and not bool((std._data >= 0).all()):
        raise RuntimeError("normal expects all elements of std >= 0.0")
    if not isinstance(std, Tensor) and std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    if any(t._data.dtype.kind != "f" for t in tensors):
        raise RuntimeError(f"normal expects floating point mean and std, got "
                           f"{', '.join(str(t.dtype) for t in tensors)}")
    return Draw.apply(mean, std, kind="normal", generator=generator)
