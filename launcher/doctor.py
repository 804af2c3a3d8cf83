"""`dtrain doctor`: the preflight to run on a new machine and before a cluster allocation.

Each check reports ok, warn or fail, with the fix for anything not ok: Python, NumPy and its
BLAS, threads and memory bandwidth; MPI (the mpiexec the launcher uses, mpi4py, a real
2-rank all-reduce through dtrain's MPI backend, its bandwidth at 1 and 25 MiB against memory
bandwidth); CuPy, the GPUs, driver and runtime, NCCL, a 1-GPU NCCL all-reduce and a
matmul/conv step (or "no GPU"); hostnames and network interfaces as the launcher sees them;
inside a Slurm allocation, its nodes and one rank per node started the way `dtrain launch`
starts them. The ranks run this file (`probe`), through the launcher's rank supervisor.
"""
import fcntl
import json
import os
import platform
import re
import socket
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

MIB = 1 << 20
ALLREDUCE_MIB = (1, 25)
PROBE_TIMEOUT_S = 120
# An all-reduce between ranks of one node moves its data through shared memory: below this
# fraction of a plain memory copy's bandwidth, it is likely going through the network stack.
MIN_MEMORY_FRACTION = 0.02
_MARK = "DTRAIN-DOCTOR "


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str = ""
    data: dict = field(default_factory=dict)


# -- Python, NumPy, threads, memory ---------------------------------------------------------
def memory_bandwidth(nbytes=64 * MIB, repeat=5):
    """Bytes per second of the best of `repeat` copies of an `nbytes` array."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeat))
    return nbytes / best


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def check_python():
    blas = (np.show_config(mode="dicts").get("Build Dependencies") or {}).get("blas") or {}
    name = f"{blas.get('name', 'unknown')} {blas.get('version', '')}".strip()
    detail = (f"Python {platform.python_version()} ({sys.executable}), NumPy {np.__version__}"
              f", BLAS {name}")
    data = {"python": platform.python_version(), "executable": sys.executable,
            "numpy": np.__version__, "blas": name}
    if not re.search(r"openblas|mkl|accelerate|blis", name, re.I):
        return Check("python", "warn", detail, "NumPy is not linked to an optimized BLAS: "
                     "pip install --force-reinstall numpy (the wheels bring OpenBLAS)", data)
    return Check("python", "ok", detail, data=data)


def check_threads(bandwidth):
    cpus = len(os.sched_getaffinity(0))
    omp = os.environ.get("OMP_NUM_THREADS")
    data = {"cpus": cpus, "cpu_count": os.cpu_count(), "OMP_NUM_THREADS": omp,
            "memory_GBps": bandwidth / 1e9}
    detail = (f"{cpus} CPUs usable of {os.cpu_count()}, OMP_NUM_THREADS="
              f"{omp or 'unset (the launcher gives each rank CPUs / ranks per node)'}; memory "
              f"copy {bandwidth / 1e9:.1f} GB/s")
    if omp and omp.isdigit() and int(omp) > cpus:
        return Check("threads", "warn", detail, f"OMP_NUM_THREADS={omp} exceeds the {cpus} "
                     "usable CPUs: unset it or lower it", data)
    return Check("threads", "ok", detail, data=data)


# -- MPI ------------------------------------------------------------------------------------
def run_probe(nproc_per_node, nnodes, mpiexec=None, sizes_mib=()):
    """Start the probe on the ranks as `dtrain launch` would; (rank 0's report or None,
    the output's tail)."""
    from dtrain.launcher import run

    spec = run.JobSpec([os.path.abspath(__file__), "probe", *map(str, sizes_mib)],
                       nproc_per_node=nproc_per_node, nnodes=nnodes, mpiexec=mpiexec)
    try:
        # the launcher's environment; no control directory: the probe's ranks record nothing
        env = run._environment(spec, "doctor", "", sys.stderr)
        proc = subprocess.run(run.command(spec), capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return None, f"no answer in {PROBE_TIMEOUT_S} s"
    except OSError as err:
        return None, str(err)
    found = re.search(rf"{_MARK}(\{{.*\}})", proc.stdout)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
    return (json.loads(found.group(1)) if found and proc.returncode == 0 else None), tail


def check_mpi(bandwidth, mpiexec=None):
    """mpiexec, mpi4py, and a 2-rank all-reduce on this node with its bandwidth."""
    from dtrain.launcher import run

    fix_install = "pip install 'dtrain[mpi]' (mpi4py and the mpich wheel's mpiexec)"
    try:
        path = run.find_mpiexec(mpiexec)
    except RuntimeError as err:
        return [Check("mpiexec", "fail", str(err), fix_install)]
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return [Check("mpiexec", "fail", f"{path} is not an executable file",
                      f"{fix_install}, or give the path of a working mpiexec")]
    checks = [Check("mpiexec", "ok", path, data={"path": path})]
    try:
        from mpi4py import MPI
    except ImportError as err:
        return checks + [Check("mpi4py", "fail", f"mpi4py does not import: {err}", fix_install)]
    checks.append(Check("mpi4py", "ok", MPI.Get_library_version().splitlines()[0].strip()))
    report, tail = run_probe(2, 1, mpiexec, ALLREDUCE_MIB)
    if report is None:
        return checks + [Check("allreduce", "fail", f"a 2-rank all-reduce through {path} "
                               f"failed:\n{tail}", "run `mpiexec -n 2 python -c 'from mpi4py "
                               "import MPI; print(MPI.COMM_WORLD.Get_rank())'` to see MPI's "
                               "own error; check that mpiexec and mpi4py come from the same "
                               "MPI (pip install 'dtrain[mpi]' installs a matching pair)")]
    rates = {int(k): v for k, v in report["GBps"].items()}
    ratio = rates[max(rates)] * 1e9 / bandwidth
    detail = (", ".join(f"{mib} MiB {gbps:.2f} GB/s" for mib, gbps in rates.items()) +
              f" (2 ranks; {ratio:.1%} of the memory copy's {bandwidth / 1e9:.1f} GB/s)")
    data = {"GBps": rates, "memory_GBps": bandwidth / 1e9, "fraction_of_memory": ratio}
    if ratio < MIN_MEMORY_FRACTION:
        return checks + [Check("allreduce", "warn", detail, "ranks on one node should exchange "
                               "through shared memory: check the MPI's shared-memory transport "
                               "(and that the node is not oversubscribed)", data)]
    return checks + [Check("allreduce", "ok", detail, data=data)]


def probe(args):
    """On each rank: all-reduce rank-dependent values of each size (MiB) in `args` through
    dtrain's MPI backend and check the sums; rank 0 prints the nodes and bandwidths."""
    import dtrain as dt
    from dtrain import distributed as dist
    from dtrain.launcher.identity import node_name

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    nodes = [None] * world
    dist.all_gather_object(nodes, node_name())
    rates = {}
    for mib in map(int, args):
        t = dt.full((mib * MIB // 4,), float(rank + 1), dtype=dt.float32)
        dist.all_reduce(t)
        if not bool((t == world * (world + 1) / 2).all()):
            raise RuntimeError(f"all-reduce of {mib} MiB gave wrong sums")
        times = []
        for _ in range(max(3, 25 // mib)):
            dist.barrier()
            times.append(_timed(lambda: dist.all_reduce(t)))
        rates[mib] = mib * MIB / min(times) / 1e9
    if rank == 0:
        print(_MARK + json.dumps({"nodes": nodes, "GBps": rates}), flush=True)
    dist.destroy_process_group()


# -- GPUs -----------------------------------------------------------------------------------
def check_gpu():
    from dtrain.core import backend

    if not backend.cuda_is_available():
        try:
            backend.require_cuda()
        except RuntimeError as err:
            reason = str(err).split("is not available: ", 1)[-1]
        return [Check("gpu", "warn", f"no GPU: {reason}", "on a machine with NVIDIA GPUs: "
                      "pip install 'dtrain[cuda]', and check nvidia-smi and "
                      "CUDA_VISIBLE_DEVICES; without one, dtrain trains on the CPU")]
    import dtrain as dt

    cp = backend.require_cuda()
    driver, runtime = cp.cuda.runtime.driverGetVersion(), cp.cuda.runtime.runtimeGetVersion()
    names = [dt.cuda.get_device_name(i) for i in range(dt.cuda.device_count())]
    versions = f"driver CUDA {driver // 1000}.{driver % 1000 // 10}, runtime " \
               f"{runtime // 1000}.{runtime % 1000 // 10}"
    checks = [Check("gpu", "ok", f"{len(names)} GPU(s): {', '.join(names)}; {versions}",
                    data={"gpus": names, "driver": driver, "runtime": runtime})]
    if driver < runtime:
        checks[0] = Check("gpu", "fail", checks[0].detail, "the driver is older than CuPy's "
                          "CUDA runtime: update the NVIDIA driver, or install the CuPy for "
                          "its CUDA version", checks[0].data)
    checks.append(_gpu_step(dt))
    checks.append(_nccl(cp))
    return checks


def _gpu_step(dt):
    """A convolution and a matmul on cuda:0 equal to the CPU's."""
    x, w, m = dt.randn(64, 3, 16, 16), dt.randn(8, 3, 3, 3), dt.randn(8 * 14 * 14, 32)

    def step(device):
        return dt.nn.functional.conv2d(x.to(device), w.to(device)).flatten(1) @ m.to(device)
    try:
        same = dt.allclose(step("cuda").cpu(), step("cpu"), rtol=1e-3, atol=1e-3)
    except Exception as err:  # a broken CUDA installation can raise anything here
        return Check("gpu step", "fail", f"conv2d/matmul on cuda:0 raised {err!r}",
                     "check the CUDA libraries CuPy loads (cuBLAS, cuDNN)")
    if not same:
        return Check("gpu step", "fail", "conv2d/matmul on cuda:0 differ from the CPU's",
                     "check the GPU's health: nvidia-smi -q")
    return Check("gpu step", "ok", "conv2d and matmul on cuda:0 equal the CPU's")


def _nccl(cp):
    """NCCL present, and a 1-GPU NCCL all-reduce."""
    try:
        from cupy.cuda import nccl
    except ImportError as err:
        return Check("nccl", "warn", f"CuPy has no NCCL ({err}): multi-GPU training falls back "
                     "to the MPI backend", "pip install nvidia-nccl-cu12 (CuPy loads it)")
    try:
        comm = nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)
        x = cp.arange(1024, dtype=cp.float32)
        y = cp.empty_like(x)
        stream = cp.cuda.Stream.null
        comm.allReduce(x.data.ptr, y.data.ptr, x.size, nccl.NCCL_FLOAT32, nccl.NCCL_SUM,
                       stream.ptr)
        stream.synchronize()
        same = bool((y == x).all())
    except Exception as err:  # NcclError, CUDARuntimeError
        return Check("nccl", "fail", f"a 1-GPU NCCL all-reduce raised {err!r}",
                     "check NCCL_DEBUG=INFO's output and the NCCL library CuPy loads")
    version = nccl.get_version()
    detail = f"NCCL {version // 10000}.{version // 100 % 100}.{version % 100}, 1-GPU all-reduce"
    return Check("nccl", "ok" if same else "fail", detail,
                 "" if same else "NCCL's all-reduce gave wrong values: check the GPU and NCCL")


# -- network, Slurm -------------------------------------------------------------------------
def _ipv4(interface):
    """The IPv4 address of `interface`, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915,  # SIOCGIFADDR
                                 struct.pack("256s", interface[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def check_network():
    """The node name the launcher reports, what the host name resolves to, the interfaces."""
    from dtrain.launcher.identity import node_name

    host = socket.gethostname()
    addresses = {name: _ipv4(name) for _, name in socket.if_nameindex()}
    addresses = {k: v for k, v in addresses.items() if v}
    data = {"node": node_name(), "hostname": host, "fqdn": socket.getfqdn(),
            "interfaces": addresses}
    try:
        resolved = socket.gethostbyname(host)
    except OSError as err:
        return Check("network", "fail", f"host name {host!r} does not resolve ({err})",
                     f"add {host} with this node's address to /etc/hosts or DNS", data)
    data["resolves_to"] = resolved
    detail = (f"node {node_name()}, host {host} -> {resolved}; interfaces "
              f"{', '.join(f'{k} {v}' for k, v in addresses.items())}")
    if resolved.startswith("127."):
        return Check("network", "warn", detail, f"{host} resolves to loopback: fine on one "
                     "node, but ranks on other nodes cannot reach it; map it to an address of "
                     "a real interface in /etc/hosts or DNS, or use a hostfile of addresses",
                     data)
    return Check("network", "ok", detail, data=data)


def check_slurm(mpiexec=None):
    """Inside an allocation: its nodes, and one rank per node started as `dtrain launch` does
    (mpiexec's Slurm bootstrap)."""
    from dtrain.launcher.hostlist import expand

    nodes = expand(os.environ.get("SLURM_JOB_NODELIST", ""))
    detail = f"job {os.environ['SLURM_JOB_ID']} on {len(nodes)} node(s): {', '.join(nodes)}"
    if not nodes or "SLURM_NTASKS" not in os.environ:
        return Check("slurm", "fail", detail + " (SLURM_JOB_NODELIST or SLURM_NTASKS unset)",
                     "run dtrain doctor inside the allocation (salloc/sbatch), not in a shell "
                     "that only inherited SLURM_JOB_ID")
    report, tail = run_probe(1, len(nodes), mpiexec)
    if report is None:
        return Check("slurm", "fail", f"{detail}; one rank per node failed:\n{tail}",
                     "check that the nodes reach each other (host names, firewalls) and that "
                     "this Python and dtrain exist at the same paths on every node")
    data = {"nodes": nodes, "ranks_on": report["nodes"]}
    if sorted(report["nodes"]) != sorted(nodes):
        return Check("slurm", "fail", f"{detail}; the ranks ran on {report['nodes']}",
                     "mpiexec did not place one rank per node: check the Slurm bootstrap "
                     "(mpiexec -bootstrap slurm)", data)
    return Check("slurm", "ok", f"{detail}; one rank per node all-reduced", data=data)


# -- the command ----------------------------------------------------------------------------
def run_checks(mpiexec=None):
    """Every check for this machine, in order."""
    bandwidth = memory_bandwidth()
    checks = [check_python(), check_threads(bandwidth), *check_mpi(bandwidth, mpiexec),
              *check_gpu(), check_network()]
    if "SLURM_JOB_ID" in os.environ:
        checks.append(check_slurm(mpiexec))
    return checks


def main(as_json=False, mpiexec=None):
    """Print the checks (text or JSON); exit code 1 when one failed, else 0."""
    checks = run_checks(mpiexec)
    failed = any(c.status == "fail" for c in checks)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{c.status:<5} {c.name}: {c.detail}")
            if c.fix:
                print(f"      fix: {c.fix}")
        counts = {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "fail")}
        print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if failed else 0


if __name__ == "__main__":  # a rank of the probe, started by run_probe
    if sys.argv[1:2] != ["probe"]:
        sys.exit("usage: dtrain doctor (this file runs as the ranks' probe)")
    probe(sys.argv[2:])
