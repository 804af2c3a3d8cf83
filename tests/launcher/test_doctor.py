"""`dtrain doctor` on this machine: real MPI checks (2 ranks through the launcher), "no GPU"
reported cleanly, JSON for scripts, and failures that exit 1 with their fix."""
import json
import re
import socket

import pytest

import dtrain as dt
from dtrain.launcher import run

NAMES = ["python", "threads", "mpiexec", "mpi4py", "allreduce", "gpu", "network"]


def test_text_report_and_exit_code(dtrain_cli):
    proc = dtrain_cli("doctor", timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("      ")]
    statuses = {m.group(2): m.group(1) for m in
                (re.match(r"(ok|warn|fail) +([\w ]+?): ", line) for line in lines) if m}
    assert list(statuses)[:len(NAMES)] == NAMES
    assert statuses["mpiexec"] == statuses["mpi4py"] == "ok"
    assert statuses["allreduce"] in ("ok", "warn")  # warn: slower than 2% of memory copies
    assert re.search(r"allreduce: 1 MiB [\d.]+ GB/s, 25 MiB [\d.]+ GB/s \(2 ranks; [\d.]+% of "
                     r"the memory copy's [\d.]+ GB/s\)", proc.stdout)
    assert f"ok    mpiexec: {run.find_mpiexec()}" in proc.stdout
    if not dt.cuda.is_available():
        assert "warn  gpu: no GPU: " in proc.stdout
        assert "fix: on a machine with NVIDIA GPUs: pip install 'dtrain[cuda]'" in proc.stdout
    counts = re.search(r"^(\d+) ok, (\d+) warn, 0 fail$", proc.stdout, re.M)
    assert counts and sum(map(int, counts.groups())) == len(statuses)


def test_json_report(dtrain_cli):
    proc = dtrain_cli("doctor", "--json", timeout=200)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True and list(checks)[:len(NAMES)] == NAMES
    assert all(c["status"] in ("ok", "warn") for c in checks.values())
    assert all(c["fix"] for c in checks.values() if c["status"] != "ok")
    allreduce = checks["allreduce"]["data"]
    assert sorted(allreduce["GBps"]) == ["1", "25"] and min(allreduce["GBps"].values()) > 0
    assert allreduce["fraction_of_memory"] == pytest.approx(
        allreduce["GBps"]["25"] / allreduce["memory_GBps"])
    assert checks["threads"]["data"]["memory_GBps"] > 0
    assert checks["mpiexec"]["data"]["path"] == run.find_mpiexec()
    network = checks["network"]["data"]
    assert network["hostname"] == socket.gethostname() == network["node"]
    assert network["interfaces"]["lo"] == "127.0.0.1"


def test_missing_mpiexec_fails_with_the_fix(dtrain_cli, tmp_path):
    proc = dtrain_cli("doctor", "--mpiexec", tmp_path / "no" / "mpiexec", timeout=200)
    assert proc.returncode == 1
    assert f"fail  mpiexec: {tmp_path / 'no' / 'mpiexec'} is not an executable file" in \
        proc.stdout
    assert "      fix: pip install 'dtrain[mpi]'" in proc.stdout
    assert "allreduce" not in proc.stdout and proc.stdout.rstrip().endswith("1 fail")


def test_broken_mpi_fails_the_allreduce_with_its_output(dtrain_cli, tmp_path):
    broken = tmp_path / "mpiexec"
    broken.write_text("#!/bin/sh\necho 'HYDU_sock_connect: unable to connect' >&2\nexit 7\n")
    broken.chmod(0o755)
    proc = dtrain_cli("doctor", "--json", "--mpiexec", broken, timeout=200)
    assert proc.returncode == 1
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["allreduce"]["status"] == "fail"
    assert "HYDU_sock_connect: unable to connect" in checks["allreduce"]["detail"]
    assert "mpiexec and mpi4py come from the same MPI" in checks["allreduce"]["fix"]
