"""A rank's identity comes from its MPI launcher, never from RANK/WORLD_SIZE/... left in the
shell by torchrun or Kubeflow."""
import pytest

from dtrain.launcher.identity import identity, rank_environment, stale_variables

PRINT_IDENTITY = """
import os
import dtrain.distributed as dist
dist.init_process_group()
names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_PORT")
print("ID", *(os.environ.get(n) for n in names), dist.get_rank(), dist.get_world_size())
"""


def test_stale_torchrun_variables_do_not_split_the_job(dtrain_cli, tmp_path):
    (tmp_path / "who.py").write_text(PRINT_IDENTITY)
    stale = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
             "NODE_RANK": "3", "MASTER_PORT": "29500", "TORCHELASTIC_RUN_ID": "old"}
    proc = dtrain_cli("launch", "--nproc-per-node", "2", "who.py", env=stale, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for r in (0, 1):
        assert f"[rank {r}] ID {r} 2 {r} 2 0 None {r} 2\n" in proc.stdout, proc.stdout
    assert ("dtrain launch: ignoring LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_PORT, NODE_RANK, RANK, "
            "TORCHELASTIC_RUN_ID, WORLD_SIZE from the environment") in proc.stderr


LAUNCHERS = {
    "hydra": {"PMI_RANK": "5", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1",
              "MPI_LOCALNRANKS": "4", "SLURM_PROCID": "0", "SLURM_NODEID": "0"},
    "srun": {"PMI_RANK": "5", "PMI_SIZE": "8", "SLURM_PROCID": "5", "SLURM_NTASKS": "8",
             "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "4", "SLURM_NODEID": "1"},
    "openmpi": {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8",
                "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"},
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_identity_comes_from_the_launchers_variables(monkeypatch, launcher):
    for name in set().union(*LAUNCHERS.values()):
        monkeypatch.delenv(name, raising=False)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK"):
        monkeypatch.setenv(name, "0")  # stale: must be overridden
    for name, value in LAUNCHERS[launcher].items():
        monkeypatch.setenv(name, value)
    assert identity() == (5, 8, 1, 4, 1)
    env = rank_environment()
    assert [env[n] for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                             "NODE_RANK")] == ["5", "8", "1", "4", "1"]


def test_stale_variables_are_torchruns():
    env = {"RANK": "0", "MASTER_ADDR": "h", "TORCHELASTIC_RESTART_COUNT": "0", "PATH": "/bin",
           "PMI_RANK": "0", "SLURM_PROCID": "0", "DTRAIN_RUN_ID": "x"}
    assert stale_variables(env) == ["MASTER_ADDR", "RANK", "TORCHELASTIC_RESTART_COUNT"]
