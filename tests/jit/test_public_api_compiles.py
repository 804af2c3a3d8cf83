"""Every public `dt` function and Tensor method, called inside `dt.compile` the way the
eager call works (on a float tensor alone, or with one more argument: 1 or another tensor):
nothing is computed outside the op registry (which would make a graph refuse the function
or freeze a constant), and a replay on new data equals the eager call. Found by iterating the
namespaces, so a new function is covered or fails here."""
import inspect
import warnings

import numpy as np
import pytest

import dtrain as dt

NOT_CALLED = {"compile", "save", "load", "manual_seed", "seed", "set_rng_state",
              "set_default_dtype", "set_default_device", "set_printoptions",
              "set_grad_enabled", "use_deterministic_algorithms",
              # Python reads or hooks, not ops
              "backward", "register_hook", "register_post_accumulate_grad_hook",
              "retain_grad", "numpy", "tolist", "item", "apply_", "map_", "share_memory_"}
# Results a graph does not hold: sparse tensors, a memory address.
NOT_CAPTURED = {"Tensor.to_sparse", "Tensor.data_ptr"}
RANDOM = ("rand", "normal", "bernoulli", "multinomial", "poisson", "dropout", "uniform_",
          "exponential_", "geometric_", "cauchy_", "log_normal_", "random_", "rrelu")


def _callables():
    for name in sorted(dir(dt)):
        obj = getattr(dt, name)
        if not (name.startswith("_") or name in NOT_CALLED or not callable(obj)
                or inspect.isclass(obj) or inspect.ismodule(obj)):
            yield "dt." + name, obj
    for name in sorted(dir(dt.Tensor)):
        if not (name.startswith("_") or name in NOT_CALLED
                or not callable(getattr(dt.Tensor, name, None))):
            yield "Tensor." + name, lambda x, *a, _n=name: getattr(x, _n)(*a)


def _flat(obj):
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _flat(o)]
    return [obj]


def _data(rng):
    return dt.tensor(rng.standard_normal((3, 4)))


def _eager_arguments(fn, rng):
    """The first extra arguments with which `fn(x, *extra)` runs eagerly, else None."""
    for extra in ((), (1,), (_data(rng),)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(_data(rng), *extra)
            return extra
        except Exception:
            continue
    return None


def test_every_public_function_compiles_and_replays_its_eager_values():
    rng = np.random.default_rng(0)
    exercised, problems = 0, {}
    for name, fn in _callables():
        extra = _eager_arguments(fn, rng)
        if extra is None or name in NOT_CAPTURED:
            continue
        exercised += 1
        compiled = dt.compile(lambda x, _fn=fn, _extra=extra: _fn(x, *_extra))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled(_data(rng))
                compiled(_data(rng))  # the second recording, checked against the first
                x = _data(rng)
                x_eager = x.clone()  # before an in-place function changes x
                got, want = compiled(x), fn(x_eager, *extra)
        except dt.jit.TraceError as err:
            if "shape depends on the values" not in str(err):  # refused by declaration
                problems[name] = str(err)[:160]
            continue
        except Exception as err:
            problems[name] = f"{type(err).__name__}: {str(err)[:160]}"
            continue
        if name.split(".")[-1].startswith(RANDOM):
            continue
        got, want = _flat(got), _flat(want)
        if len(got) != len(want) or not all(
                np.array_equal(g.detach().numpy(), w.detach().numpy(), equal_nan=True)
                if isinstance(g, dt.Tensor) else g == w for g, w in zip(got, want)):
            problems[name] = f"replay gave {got!r:.80}, eager {want!r:.80}"
    assert exercised > 400
    assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())


@pytest.mark.parametrize("fn", [lambda x: x, lambda x: x.relu_(), lambda x: x.to(x.dtype),
                                lambda x: (x.sort(1), x.max(0))],
                         ids=["identity", "inplace", "to_same", "named_tuples"])
def test_functions_returning_their_input_or_named_tuples_replay(fn):
    compiled = dt.compile(fn)
    for seed in range(3):
        x = dt.tensor(np.random.default_rng(seed).standard_normal((3, 4)))
        got, want = _flat(compiled(x.clone())), _flat(fn(x.clone()))
        assert [type(g) for g in got] == [type(w) for w in want]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g.numpy(), w.numpy())
    out = compiled(dt.ones(3, 4))
    if isinstance(out, tuple):
        assert type(out[0]).__name__ == "ValuesIndices" and out[0].indices.dtype == dt.int64
