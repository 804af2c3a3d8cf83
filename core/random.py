"""Random number generators: one default per device, seeded together by `manual_seed`."""
import contextlib
import copy

import numpy as np

from dtrain.core import backend
from dtrain.core.device import CPU

# PyTorch's default seed, so that an unseeded program is still reproducible.
DEFAULT_SEED = 67280421310721


class Generator:
    """A seeded source of random arrays on one device (`dt.Generator(device="cpu")`)."""

    def __init__(self, device="cpu"):
        self.device = backend.normalize_device(device)
        self.manual_seed(DEFAULT_SEED)

    def manual_seed(self, seed):
        seed = int(seed)
        self._seed = seed
        xp = backend.module_for(self.device)
        with backend.device_context(self.device):
            self._rng = xp.random.default_rng(seed & 0xFFFFFFFFFFFFFFFF)
        return self

    def initial_seed(self):
        return self._seed

    def seed(self):
        """Re-seed from fresh entropy and return the new seed (as torch's `Generator.seed`)."""
        seed = int(np.random.SeedSequence().entropy) & 0xFFFFFFFFFFFFFFFF
        self.manual_seed(seed)
        return seed

    def get_state(self):
        """A JSON-able snapshot of the generator (CPU generators only)."""
        if self.device.type != "cpu":
            raise RuntimeError("get_state() is only supported for CPU generators")
        return {"seed": self._seed, "bit_generator": self._rng.bit_generator.state}

    def set_state(self, state):
        if self.device.type != "cpu":
            raise RuntimeError("set_state() is only supported for CPU generators")
        self._seed = state["seed"]
        self._rng.bit_generator.state = state["bit_generator"]

    @property
    def rng(self):
        """The backend generator (numpy.random.Generator or cupy's)."""
        return self._rng


_defaults = {}


def default_generator(dev=CPU):
    """The default generator of a (normalized) device, made on first use."""
    gen = _defaults.get(dev)
    if gen is None:
        gen = _defaults[dev] = Generator(dev)
        if _seed_for_new is not None:
            gen.manual_seed(_seed_for_new)
    return gen


_seed_for_new = None


def generator_for(generator, dev):
    """`generator` (checked to be on device `dev`), or the default generator of `dev`."""
    if generator is None:
        return default_generator(dev)
    if generator.device != dev:
        raise RuntimeError(f"Expected a '{dev.type}' device type for generator but found "
                           f"'{generator.device.type}'")
    return generator


def manual_seed(seed):
    """Seed every device's default generator (those made later too); returns the CPU one."""
    global _seed_for_new
    _seed_for_new = int(seed)
    for gen in _defaults.values():
        gen.manual_seed(seed)
    return default_generator()


def seed():
    """Seed every device's default generator from fresh entropy; returns the seed (as
    torch.seed), which `manual_seed` takes to repeat the run."""
    new = Generator().seed()
    manual_seed(new)
    return new


def initial_seed():
    """The seed the default CPU generator started from."""
    return default_generator().initial_seed()


def get_rng_state():
    """The default CPU generator's state (for set_rng_state)."""
    return default_generator().get_state()


def set_rng_state(state):
    """Restore the default CPU generator's state from get_rng_state()."""
    default_generator().set_state(state)


def get_states(devices=()):
    """A snapshot of the default generators of the CPU and of `devices` (any backend), for
    `set_states`."""
    return {dev: copy.deepcopy(default_generator(dev).rng) for dev in {CPU, *devices}}


def set_states(states):
    """Put the default generators back in the states of a `get_states` snapshot (which
    stays usable)."""
    for dev, rng in states.items():
        default_generator(dev)._rng = copy.deepcopy(rng)


@contextlib.contextmanager
def fork_rng(devices=(), enabled=True):
    """As `torch.random.fork_rng`: on exit, the default generators of the CPU and of
    `devices` are back in the states they had on entry."""
    if not enabled:
        yield
        return
    states = get_states(devices)
    try:
        yield
    finally:
        set_states(states)
