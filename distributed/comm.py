"""The communicator interface and its factory; backends are imported lazily.

A communicator moves backend arrays between the ranks of one group. Every `I...` method is
non-blocking and returns a `Pending` (`Work` turns it into a user handle with timeouts);
buffers are contiguous arrays that the caller prepared. A backend may add blocking forms.
"""
import os

LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                 "MV2_COMM_WORLD_SIZE", "HYDRA_CONTROL_FD")


def launched_by_mpi():
    """True when this process was started by an MPI launcher (mpiexec, srun --mpi=...)."""
    return any(v in os.environ for v in LAUNCHER_VARS)


def offsets(counts):
    """[0, c0, c0 + c1, ..., sum(counts)]: where consecutive parts of `counts` elements start
    in one buffer (and where the last ends)."""
    out = [0]
    for c in counts:
        out.append(out[-1] + int(c))
    return out


class Pending:
    """An operation in flight: `test()` polls completion (driving progress), `finish()` runs
    once after completion (e.g. copies staged results back); after it, `source` and
    `received` are the sender rank and byte count of a receive (None where unknown)."""

    source = None
    received = None

    def test(self):
        raise NotImplementedError

    def finish(self):
        pass


class Communicator:
    """Collectives and point-to-point transfers over one group (MPI-named methods)."""

    rank: int
    size: int

    def Iallreduce(self, buf, op):
        raise NotImplementedError

    def Ibcast(self, buf, root):
        raise NotImplementedError

    def Ireduce(self, buf, root, op):
        raise NotImplementedError

    def Iallgather(self, sendbuf, recvbuf):
        raise NotImplementedError

    def Ireduce_scatter(self, sendbuf, recvbuf, op):
        raise NotImplementedError

    def Ireduce_scatter_v(self, sendbuf, recvbuf, counts, op):
        """Reduce `sendbuf` (sum(counts) elements) and give rank i the counts[i] elements
        that follow the first sum(counts[:i]) (MPI's Reduce_scatter)."""
        raise NotImplementedError

    def Iallgatherv(self, sendbuf, recvbuf, counts):
        """Concatenate every rank's `sendbuf` (counts[i] elements on rank i) in `recvbuf`."""
        raise NotImplementedError

    def Igather(self, sendbuf, recvbuf, root):
        raise NotImplementedError

    def Iscatter(self, sendbuf, recvbuf, root):
        raise NotImplementedError

    def Ialltoallv(self, sendbuf, sendcounts, recvbuf, recvcounts):
        raise NotImplementedError

    def Isend(self, buf, dest, tag):
        raise NotImplementedError

    def Irecv(self, buf, source, tag):
        raise NotImplementedError

    def Ibarrier(self):
        raise NotImplementedError

    def abort(self):
        """Give up on the transfers in flight (after a mismatched call); MPI cannot."""

    # Blocking forms, for synchronous calls once the call check has passed (every rank is
    # then inside the same call, so they need no timeout). None where a backend has none.
    Allreduce = None


def make_communicator(backend, mpi_comm):
    """The communicator for `backend` ("mpi" or "nccl") over the ranks of `mpi_comm`."""
    if backend == "mpi":
        from dtrain.distributed.mpi_comm import MPICommunicator

        return MPICommunicator(mpi_comm)
    if backend == "nccl":
        from dtrain.distributed.nccl_comm import NCCLCommunicator

        return NCCLCommunicator(mpi_comm)
    raise ValueError(f"unknown backend {backend!r}; expected 'mpi' or 'nccl'")
