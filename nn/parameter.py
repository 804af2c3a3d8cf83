"""`Parameter`: a leaf Tensor that a Module registers as trainable state."""
import numpy as np

from dtrain.core import serialization
from dtrain.core.tensor import Tensor, _rebuild


@serialization.allow_dtrain_global  # dt.save's pickles name it (dt.load(weights_only=True))
class Parameter(Tensor):
    """A Tensor that requires grad by default and is found by `Module.parameters()`."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.empty(0, dtype=np.float32)
        self._init(data)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce__(self):
        # deepcopy/pickle (copy.deepcopy(model), DataLoader workers) keep the Parameter type.
        return (_rebuild_parameter, super().__reduce__()[1])


def _rebuild_parameter(array, device, requires_grad):
    return Parameter(_rebuild(array, device, False), requires_grad)
