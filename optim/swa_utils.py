"""Stochastic weight averaging, as `torch.optim.swa_utils`: `AveragedModel` keeps a running
(or exponential) average of a model's parameters, `SWALR` anneals each group's rate to its
`swa_lr`, `update_bn` recomputes BatchNorm statistics for the averaged weights."""
import copy
import itertools
import math

from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.ops.pointwise import where
from dtrain.core import creation
from dtrain.core import dtype as dtypes
from dtrain.nn.module import Module
from dtrain.nn.normalization import _NormBase
from dtrain.optim.lr_scheduler import LRScheduler


def get_ema_avg_fn(decay=0.999):
    def ema_update(ema_param, current_param, num_averaged):
        return decay * ema_param + (1 - decay) * current_param
    return ema_update


def get_swa_avg_fn():
    def swa_update(averaged_param, current_param, num_averaged):
        return averaged_param + (current_param - averaged_param) / (num_averaged + 1)
    return swa_update


def get_ema_multi_avg_fn(decay=0.999):
    def ema_update(ema_params, current_params, num_averaged):
        for e, c in zip(ema_params, current_params):
            e.copy_(e + (c - e) * (1 - decay))
    return ema_update


class AveragedModel(Module):
    """A copy of `model` whose parameters are the average of those passed to
    `update_parameters` (equal weights by default; `avg_fn`/`multi_avg_fn` to change)."""

    def __init__(self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise ValueError("Only one of avg_fn and multi_avg_fn should be provided")
        self.module = copy.deepcopy(model)
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("n_averaged", creation.tensor(0, dtype=dtypes.int64, device=device))
        self.avg_fn, self.multi_avg_fn, self.use_buffers = avg_fn, multi_avg_fn, use_buffers

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _tensors(self, model):
        if self.use_buffers:
            return list(itertools.chain(model.parameters(), model.buffers()))
        return list(model.parameters())

    def update_parameters(self, model):
        """Average `model`'s parameters into this copy (the first call copies them). No
        Python branch on `n_averaged`: the first call selects the copy with `where`, so
        that a compiled training step can call this."""
        mine = self._tensors(self.module)
        theirs = [t.detach().to(m.device) for t, m in zip(self._tensors(model), mine)]
        with no_grad():
            first = self.n_averaged == 0
            if self.multi_avg_fn is not None:
                self.multi_avg_fn([m.detach() for m in mine], theirs, self.n_averaged)
                for m, t in zip(mine, theirs):
                    m.copy_(where(first, t, m))
            else:
                avg = self.avg_fn or get_swa_avg_fn()
                for m, t in zip(mine, theirs):
                    if m.dtype.is_floating_point:
                        m.copy_(where(first, t, avg(m.detach(), t, self.n_averaged)))
                    else:
                        m.copy_(t)
            if not self.use_buffers:  # buffers (BatchNorm statistics) follow the model
                for b, t in zip(self.module.buffers(), model.buffers()):
                    b.copy_(t.detach().to(b.device))
            self.n_averaged.add_(1)


@no_grad()
def update_bn(loader, model, device=None):
    """One pass over `loader` in train mode with cumulative-average BatchNorm statistics
    (momentum=None), so that they match the averaged weights."""
    bns = [m for m in model.modules() if isinstance(m, _NormBase)
           and getattr(m, "running_mean", None) is not None]
    if not bns:
        return
    momenta = {}
    for bn in bns:
        bn.running_mean.zero_()
        bn.running_var.fill_(1)
        momenta[bn] = bn.momentum
        bn.momentum = None
        bn.num_batches_tracked.zero_()
    was_training = model.training
    model.train()
    for batch in loader:
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        if device is not None:
            batch = batch.to(device)
        model(batch)
    for bn, momentum in momenta.items():
        bn.momentum = momentum
    model.train(was_training)


class SWALR(LRScheduler):
    """Anneal each group's rate from its current value to `swa_lr` over `anneal_epochs`
    steps ('cos' or 'linear'), then hold it."""

    def __init__(self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos",
                 last_epoch=-1):
        groups = optimizer.param_groups
        swa_lrs = list(swa_lr) if isinstance(swa_lr, (list, tuple)) else [swa_lr] * len(groups)
        if len(swa_lrs) != len(groups):
            raise ValueError(f"swa_lr must have the same length as optimizer.param_groups: "
                             f"swa_lr has {len(swa_lrs)}, optimizer.param_groups has "
                             f"{len(groups)}")
        for lr, group in zip(swa_lrs, groups):
            group["swa_lr"] = lr
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must by one of 'cos' or 'linear', instead got "
                             f"{anneal_strategy}")
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_strategy, self.anneal_epochs = anneal_strategy, anneal_epochs
        super().__init__(optimizer, last_epoch)

    def _anneal(self, t):
        return t if self.anneal_strategy == "linear" else (1 - math.cos(math.pi * t)) / 2

    def get_lr(self):
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_alpha = self._anneal(max(0, min(1, (step - 1) / max(1, self.anneal_epochs))))
        alpha = self._anneal(max(0, min(1, step / max(1, self.anneal_epochs))))
        out = []
        for group in self.optimizer.param_groups:
            swa = group["swa_lr"]
            lr = group["lr"]
            start = swa if prev_alpha == 1 else (lr - prev_alpha * swa) / (1 - prev_alpha)
            out.append(swa * alpha + start * (1 - alpha))
        return out
