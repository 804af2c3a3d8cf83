"""Optimizers and learning-rate schedulers with `torch.optim`'s names and numerics."""
from dtrain.optim import lr_scheduler, swa_utils  # noqa: F401
from dtrain.optim.adadelta import Adadelta  # noqa: F401
from dtrain.optim.adagrad import Adagrad  # noqa: F401
from dtrain.optim.adam import Adam, AdamW  # noqa: F401
from dtrain.optim.adamax import Adamax  # noqa: F401
from dtrain.optim.asgd import ASGD  # noqa: F401
from dtrain.optim.lbfgs import LBFGS  # noqa: F401
from dtrain.optim.nadam import NAdam  # noqa: F401
from dtrain.optim.optimizer import Optimizer  # noqa: F401
from dtrain.optim.radam import RAdam  # noqa: F401
from dtrain.optim.rmsprop import RMSprop  # noqa: F401
from dtrain.optim.rprop import Rprop  # noqa: F401
from dtrain.optim.sgd import SGD  # noqa: F401
