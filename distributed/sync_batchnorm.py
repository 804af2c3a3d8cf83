"""SyncBatchNorm: batch normalization with statistics over the whole global batch.

Each rank all-gathers (count, mean, M2) per channel and merges them exactly (Chan et al.'s
parallel variance); backward all-reduces the two per-channel sums that the input gradient
needs. Weight and bias gradients stay local: DDP averages them like any other gradient.
"""
from dtrain.autograd.function import Function, once_differentiable
from dtrain.autograd.grad_mode import no_grad
from dtrain.core import backend
from dtrain.core.tensor import Tensor
from dtrain.distributed import collectives
from dtrain.distributed.process_group import resolve
from dtrain.nn.module import Module
from dtrain.nn.normalization import BatchNorm1d, BatchNorm2d, _NormBase


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


class _SyncBatchNormFunction(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group):
        arr = x._data
        xp = backend.array_module(arr)
        axes, c = _axes(arr), arr.shape[1]
        n = arr.size // c
        mean = arr.mean(axis=axes, dtype=xp.float64)
        m2 = ((arr - mean.reshape(_shape(arr)).astype(arr.dtype)) ** 2).sum(axis=axes,
                                                                               dtype=xp.float64)
        mine = Tensor._make(xp.concatenate([xp.array([n], dtype=xp.float64), mean, m2]))
        every = Tensor._make(xp.empty((group.size(), 2 * c + 1), dtype=xp.float64))
        collectives.all_gather_into_tensor(every, mine, group=group)
        counts, means, m2s = every._data[:, :1], every._data[:, 1:c + 1], every._data[:, c + 1:]
        total = counts.sum()
        gmean = (counts * means).sum(axis=0) / total
        gvar = (m2s.sum(axis=0) + (counts * (means - gmean) ** 2).sum(axis=0)) / total
        if running_mean is not None:
            with no_grad():
                running_mean._data *= 1 - momentum
                running_mean._data += momentum * gmean.astype(running_mean._data.dtype)
                running_var._data *= 1 - momentum
                running_var._data += momentum * (gvar * total / max(total - 1, 1)).astype(
                    running_var._data.dtype)
                running_mean._version[0] += 1
                running_var._version[0] += 1
        shape = _shape(arr)
        invstd = (1 / xp.sqrt(gvar + eps)).astype(arr.dtype).reshape(shape)
        xhat = (arr - gmean.astype(arr.dtype).reshape(shape)) * invstd
        ctx.saved = (xhat, invstd, total, group)
        ctx.save_for_backward(weight)
        out = xhat
        if weight is not None:
            out = out * weight._data.reshape(shape)
        if bias is not None:
            out = out + bias._data.reshape(shape)
        return Tensor._make(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        xhat, invstd, total, group = ctx.saved
        (weight,) = ctx.saved_tensors
        garr = g._data
        xp = backend.array_module(garr)
        axes, c = _axes(garr), garr.shape[1]
        sum_g = garr.sum(axis=axes)
        sum_gx = (garr * xhat).sum(axis=axes)
        grads_w = Tensor._make(sum_gx.copy()) if weight is not None else None
        grad_b = Tensor._make(sum_g.copy())
        both = Tensor._make(xp.concatenate([sum_g, sum_gx]))
        collectives.all_reduce(both, group=group)
        shape = _shape(garr)
        scale = invstd if weight is None else invstd * weight._data.reshape(shape)
        gx = (garr - (both._data[:c] / total).reshape(shape)
              - xhat * (both._data[c:] / total).reshape(shape)) * scale
        return Tensor._make(gx.astype(garr.dtype)), grads_w, grad_b, None, None, None, None, None


def _shape(arr):
    return (1, -1) + (1,) * (arr.ndim - 2)


class SyncBatchNorm(_NormBase):
    """BatchNorm over the global batch of all ranks of `process_group` (N, C, ...) input."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype)
        object.__setattr__(self, "process_group", process_group)

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input):
        self._check_input_dim(input)
        group = resolve(self.process_group)
        if not self.training or group.size() == 1:
            return super().forward(input)
        factor = self.momentum
        if self.track_running_stats:
            self.num_batches_tracked._data += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.item())
        running = (self.running_mean, self.running_var) if self.track_running_stats else \
            (None, None)
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias, *running, self.eps,
                                            factor, group)

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """`module` with every BatchNorm1d/2d replaced by a SyncBatchNorm (same state)."""
        if isinstance(module, (BatchNorm1d, BatchNorm2d)):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, process_group)
            sync.load_state_dict(module.state_dict())
            if module.affine:
                sync.weight.requires_grad_(module.weight.requires_grad)
            sync.train(module.training)
            return sync
        for name, child in list(module._modules.items()):
            if isinstance(child, Module):
                module._modules[name] = cls.convert_sync_batchnorm(child, process_group)
        return module
