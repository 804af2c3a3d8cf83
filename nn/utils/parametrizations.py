"""Ready-made parametrizations, as `torch.nn.utils.parametrizations`: `weight_norm` and
`spectral_norm`, registered through `parametrize` (state-dict keys are PyTorch's)."""
from dtrain.autograd.grad_mode import no_grad
from dtrain.core import creation
from dtrain.nn.functional import normalize
from dtrain.nn.module import Module
from dtrain.nn.utils import parametrize


def norm_except_dim(v, dim):
    """The 2-norm of `v` over every dim but `dim` (kept as size-1 dims); all dims when
    dim is None or -1."""
    if dim is None or dim == -1:
        return v.pow(2).sum().sqrt()
    dim = dim % v.dim()
    others = tuple(d for d in range(v.dim()) if d != dim)
    return v.pow(2).sum(others, keepdim=True).sqrt()


class _WeightNorm(Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return weight_v * (weight_g / norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight):
        return norm_except_dim(weight, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """w = g * v / ||v||: magnitude `original0` (g) and direction `original1` (v)."""
    return parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)


class _SpectralNorm(Module):
    """w / sigma(w), sigma the largest singular value of w viewed as a matrix (dim first),
    estimated by power iteration on the buffers `_u`, `_v` (one step per training call)."""

    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.dim()
        if not -ndim <= dim < max(ndim, 1):
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError(f"Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim % ndim if ndim else 0
        self.eps, self.n_power_iterations = eps, n_power_iterations
        if ndim > 1:
            w = self._matrix(weight)
            h, wd = w.shape
            u = normalize(creation.randn(h, dtype=w.dtype, device=w.device), dim=0, eps=eps)
            v = normalize(creation.randn(wd, dtype=w.dtype, device=w.device), dim=0, eps=eps)
            self.register_buffer("_u", u)
            self.register_buffer("_v", v)
            self._power_method(w, 15)

    def _matrix(self, weight):
        return weight.movedim(self.dim, 0).flatten(1)

    def _power_method(self, w, n):
        with no_grad():
            for _ in range(n):
                self._u.copy_(normalize(w @ self._v, dim=0, eps=self.eps))
                self._v.copy_(normalize(w.T @ self._u, dim=0, eps=self.eps))

    def forward(self, weight):
        if weight.dim() == 1:
            return normalize(weight, dim=0, eps=self.eps)
        w = self._matrix(weight)
        if self.training:
            self._power_method(w.detach(), self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()
        sigma = (u * (w @ v)).sum()
        return weight / sigma

    def right_inverse(self, value):
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Divide `module.<name>` by its spectral norm (dim 1 for transposed convolutions)."""
    weight = getattr(module, name)
    if dim is None:
        dim = 1 if type(module).__name__.startswith("ConvTranspose") else 0
    return parametrize.register_parametrization(
        module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
