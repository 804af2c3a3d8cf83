"""torch.nn.modules' import paths (`dtrain.nn.modules.linear`, `...activation`, ...): each
submodule re-exports the single implementation that lives in dtrain.nn, for code and
isinstance checks that name torch's module paths."""
from dtrain.nn.modules import (activation, container, conv, dropout, linear,  # noqa: F401
                               loss, module, normalization, padding, pooling, rnn,
                               sparse, transformer)
