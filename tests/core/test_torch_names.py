"""PyTorch's module paths and device/backend names on dtrain: `dt.accelerator`, `dt.backends`,
`dt.cuda`, `dt.multiprocessing`, `dt.utils.data`, `dt.nn.parallel`, `dt.amp`, `dt.cuda.amp`,
the tensor kind predicates and the "gloo" backend name."""
import importlib
import importlib.util
import subprocess
import sys

import pytest

import dtrain as dt

CUDA = dt.cuda.is_available()
no_cuda = pytest.mark.skipif(CUDA, reason="checks the answers of a machine without CUDA")


def test_module_paths_are_the_single_implementations():
    import dtrain.amp
    import dtrain.cuda.amp
    import dtrain.multiprocessing
    import dtrain.nn.init
    import dtrain.optim.lr_scheduler
    import dtrain.utils.data as tud
    from dtrain.nn.parallel import DistributedDataParallel as DDP
    from dtrain.utils.data.distributed import DistributedSampler

    assert tud is dt.utils.data and dtrain.cuda is dt.cuda and dtrain.cuda.amp is dt.cuda.amp
    for name in ("DataLoader", "Dataset", "TensorDataset", "random_split", "Subset",
                 "DistributedSampler", "get_worker_info", "default_collate"):
        assert getattr(tud, name) is getattr(dt.data, name), name
    assert DistributedSampler is dt.data.DistributedSampler
    assert DDP is dt.nn.parallel.DistributedDataParallel is dt.distributed.DistributedDataParallel
    assert dtrain.amp.autocast is dt.autocast and dtrain.amp.GradScaler is dt.amp.GradScaler
    assert dtrain.nn.init is dt.nn.init and dtrain.optim.lr_scheduler.StepLR
    assert dtrain.multiprocessing.spawn is dt.multiprocessing.spawn
    assert dtrain.multiprocessing.Process is __import__("multiprocessing").Process


def test_module_paths_are_importable_in_a_fresh_process():
    names = ["dtrain.utils.data", "dtrain.utils.data.distributed", "dtrain.nn.parallel",
             "dtrain.amp", "dtrain.cuda", "dtrain.cuda.amp", "dtrain.multiprocessing",
             "dtrain.accelerator", "dtrain.backends.cudnn", "dtrain.backends.cuda",
             "dtrain.backends.mps", "dtrain.distributed", "dtrain.optim.lr_scheduler"]
    code = ("import importlib, sys\n"
            f"for n in {names!r}:\n"
            "    assert importlib.import_module(n) is sys.modules[n], n\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


def test_tensor_kind_predicates():
    x = dt.ones(2)
    assert x.is_cpu is True and x.is_cuda is False
    assert (x.is_xpu, x.is_mps, x.is_meta, x.is_sparse, x.is_quantized) == (False,) * 5
    if CUDA:
        y = x.to("cuda")
        assert y.is_cuda and not y.is_cpu


@no_cuda
def test_accelerator_answers_without_a_gpu():
    acc = dt.accelerator
    assert acc.is_available() is False and acc.device_count() == 0
    assert acc.current_accelerator(check_available=True) is None
    built = importlib.util.find_spec("cupy") is not None
    assert acc.current_accelerator() == (dt.device("cuda") if built else None)
    for call in (acc.current_device_index, acc.synchronize, lambda: acc.set_device_index(0)):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            call()
    device = acc.current_accelerator().type if acc.is_available() else "cpu"
    assert device == "cpu"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_accelerator_is_cuda_on_a_gpu():
    acc = dt.accelerator
    assert acc.current_accelerator(check_available=True) == dt.device("cuda")
    assert acc.device_count() == dt.cuda.device_count() >= 1
    acc.set_device_index(0)
    assert acc.current_device_index() == dt.cuda.current_device() == 0
    acc.synchronize()
    assert isinstance(dt.cuda.get_device_name(), str)
    dt.cuda.manual_seed_all(3)
    a = dt.randn(4, device="cuda")
    dt.cuda.manual_seed(3)
    assert dt.equal(a, dt.randn(4, device="cuda"))
    dt.cuda.empty_cache()


@no_cuda
def test_cuda_calls_without_a_gpu():
    assert dt.cuda.is_available() is False and dt.cuda.device_count() == 0
    dt.manual_seed(0)
    expected = dt.randn(5)
    dt.manual_seed(0)
    dt.cuda.manual_seed(7)       # no-ops without CUDA, as in PyTorch: the CPU stream is
    dt.cuda.manual_seed_all(7)   # untouched
    dt.cuda.empty_cache()
    assert dt.equal(dt.randn(5), expected)
    for call in (dt.cuda.synchronize, dt.cuda.current_device, dt.cuda.get_device_name,
                 lambda: dt.cuda.set_device(0)):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            call()


def test_backend_flags_are_settable_and_inert():
    cudnn, cuda = dt.backends.cudnn, dt.backends.cuda
    import dtrain.backends.cudnn as cudnn_module

    assert cudnn_module is cudnn
    assert (cudnn.benchmark, cudnn.deterministic, cudnn.enabled) == (False, False, True)
    assert cudnn.is_available() is False and cudnn.version() is None
    assert dt.backends.mps.is_available() is False and dt.backends.mps.is_built() is False
    assert cuda.is_built() == (importlib.util.find_spec("cupy") is not None)
    conv = dt.nn.Conv2d(1, 2, 3)
    x = dt.randn(1, 1, 5, 5)
    before = conv(x)
    saved = (cudnn.benchmark, cudnn.deterministic, cuda.matmul.allow_tf32)
    try:
        cudnn.benchmark = cudnn.deterministic = cuda.matmul.allow_tf32 = True
        assert (cudnn.benchmark, cudnn.deterministic, cuda.matmul.allow_tf32) == (True,) * 3
        assert dt.equal(conv(x), before)
    finally:
        cudnn.benchmark, cudnn.deterministic, cuda.matmul.allow_tf32 = saved


def test_cuda_amp_is_amp_bound_to_cuda():
    with dt.cuda.amp.autocast():
        assert dt.is_autocast_enabled("cuda") and not dt.is_autocast_enabled("cpu")
    assert not dt.is_autocast_enabled("cuda")
    with dt.cuda.amp.autocast(enabled=False):
        assert not dt.is_autocast_enabled("cuda")
    if CUDA:
        scaler = dt.cuda.amp.GradScaler(init_scale=8.0)
        assert scaler.is_enabled() and scaler.get_scale() == 8.0
    else:
        with pytest.warns(UserWarning, match="CUDA is not available"):
            assert not dt.cuda.amp.GradScaler(init_scale=8.0).is_enabled()


def test_backend_names_gloo_and_nccl_errors():
    import dtrain.distributed as dist

    with pytest.raises(ValueError, match="'gloo' \\(runs on MPI\\)"):
        dist.init_process_group("hccl")
    if not CUDA:
        with pytest.raises(RuntimeError, match="'nccl' was requested but NCCL is not available"):
            dist.init_process_group("nccl")
    assert not dist.is_initialized()


SPAWN = """
import sys
import dtrain.multiprocessing as mp

def square(i, base, queue):
    queue.put((i, base + i * i))

def fail(i):
    if i == 1:
        raise ValueError(f"boom from child {i}")

def leave(i):
    sys.exit(3 if i == 0 else 0)

if __name__ == "__main__":
    queue = mp.get_context("spawn").SimpleQueue()
    assert mp.spawn(square, args=(10, queue), nprocs=3) is None
    print(sorted(queue.get() for _ in range(3)))
    context = mp.spawn(square, args=(0, queue), nprocs=2, join=False)
    while not context.join():
        pass
    print(len(context.pids()), sorted(queue.get() for _ in range(2)))
    try:
        mp.spawn(fail, nprocs=2)
    except mp.ProcessRaisedException as err:
        print("RAISED", err.error_index, str(err))
    try:
        mp.spawn(leave, nprocs=2)
    except mp.ProcessExitedException as err:
        print("EXITED", err.error_index, err.exit_code, str(err))
"""


def test_multiprocessing_spawn(tmp_path):
    script = tmp_path / "spawner.py"
    script.write_text(SPAWN)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "[(0, 10), (1, 11), (2, 14)]"
    assert lines[1] == "2 [(0, 0), (1, 1)]"
    raised = out.stdout[out.stdout.index("RAISED"):out.stdout.index("EXITED")]
    assert raised.startswith("RAISED 1 \n\n-- Process 1 terminated with the following error:")
    assert "Traceback (most recent call last)" in raised and ", in fail" in raised
    assert "ValueError: boom from child 1" in raised
    assert "EXITED 0 3 process 0 terminated with exit code 3" in out.stdout

