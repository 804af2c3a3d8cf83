"""The base of dtrain's distributions, with `torch.distributions.Distribution`'s contract:
`batch_shape` (independent, differently parameterised draws) + `event_shape` (one draw);
`sample`/`rsample(sample_shape)` give `sample_shape + batch_shape + event_shape`."""
import numpy as np

import dtrain as dt
from dtrain.autograd.ops.pointwise import check_all
from dtrain.core.tensor import Size, Tensor

_validate_default = [True]


class Distribution:
    has_rsample = False
    arg_constraints = {}
    support = None

    @staticmethod
    def set_default_validate_args(value):
        _validate_default[0] = bool(value)

    def __init__(self, batch_shape=Size(), event_shape=Size(), validate_args=None):
        self._batch_shape, self._event_shape = Size(batch_shape), Size(event_shape)
        self._validate_args = _validate_default[0] if validate_args is None else validate_args
        if self._validate_args:
            for name, constraint in self.arg_constraints.items():
                if name not in self.__dict__ and isinstance(getattr(type(self), name, None),
                                                            property):
                    continue  # a parameter given in its other form (probs vs logits)
                value = getattr(self, name)
                check_all(constraint.check(value),
                          f"Expected parameter {name} ({type(value).__name__} of shape "
                          f"{tuple(value.shape)}) of distribution {type(self).__name__} to "
                          f"satisfy the constraint {constraint!r}, but found invalid values",
                          value)

    batch_shape = property(lambda self: self._batch_shape)
    event_shape = property(lambda self: self._event_shape)

    @property
    def stddev(self):
        return self.variance.sqrt()

    def sample(self, sample_shape=Size()):
        """Draws without gradient: `sample_shape + batch_shape + event_shape`."""
        with dt.no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape=Size()):
        raise NotImplementedError(f"{type(self).__name__} has no reparameterized sampler "
                                  "(rsample); use sample()")

    def sample_n(self, n):
        return self.sample(Size((n,)))

    def log_prob(self, value):
        raise NotImplementedError

    def entropy(self):
        raise NotImplementedError

    def perplexity(self):
        return self.entropy().exp()

    def _extended_shape(self, sample_shape=Size()):
        return Size(tuple(sample_shape) + tuple(self._batch_shape) + tuple(self._event_shape))

    def _validate_sample(self, value):
        """Check that `value` is a Tensor inside the support whose trailing dims broadcast
        with batch_shape + event_shape (validate_args)."""
        if not isinstance(value, Tensor):
            raise ValueError("The value argument to log_prob must be a Tensor")
        if not self._validate_args:
            return
        expected = tuple(self._batch_shape) + tuple(self._event_shape)
        for got, want in zip(reversed(tuple(value.shape)), reversed(expected)):
            if got != 1 and want != 1 and got != want:
                raise ValueError(f"Value is not broadcastable with batch_shape+event_shape: "
                                 f"{tuple(value.shape)} vs {expected}.")
        check_all(self.support.check(value),
                  f"Expected value argument ({type(value).__name__} of shape "
                  f"{tuple(value.shape)}) to be within the support ({self.support!r}) of the "
                  f"distribution {type(self).__name__}, but found invalid values", value)

    def __repr__(self):
        def show(v):
            return v.shape if v.numel() > 1 else v.item()
        params = ", ".join(f"{k}: {show(self.__dict__[k])}" for k in self.arg_constraints
                           if k in self.__dict__)
        return f"{type(self).__name__}({params})"


def broadcast_all(*values):
    """Parameters as Tensors of one broadcast shape (numbers take the others' dtype)."""
    like = next((v for v in values if isinstance(v, Tensor)), None)
    tensors = [v if isinstance(v, Tensor) else
               dt.tensor(float(v), dtype=like.dtype if like is not None else None,
                         device=like.device if like is not None else None) for v in values]
    shape = np.broadcast_shapes(*(tuple(t.shape) for t in tensors))
    return [t.expand(shape) if tuple(t.shape) != tuple(shape) else t for t in tensors]
