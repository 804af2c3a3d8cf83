"""NCCL backend (cupy.cuda.nccl) for CUDA arrays; MPI is its control plane.

The NCCL unique id is made on rank 0 and broadcast over MPI (as ChainerMN does). Operations
run on a dedicated stream that first waits for the work already queued on the current
stream; completion is an event, so `Work` polls it and can time out.
NOTE: written against CuPy's documented NCCL API; it has not run on a GPU yet.
"""
import numpy as np

from dtrain.core import backend
from dtrain.distributed.comm import Communicator, Pending, offsets


def _nccl():
    from cupy.cuda import nccl

    return nccl


def _dtype_code(nccl, dtype):
    names = {np.dtype(np.float16): "NCCL_FLOAT16", np.dtype(np.float32): "NCCL_FLOAT32",
             np.dtype(np.float64): "NCCL_FLOAT64", np.dtype(np.int32): "NCCL_INT32",
             np.dtype(np.int64): "NCCL_INT64", np.dtype(np.uint8): "NCCL_UINT8",
             np.dtype(np.int8): "NCCL_INT8", np.dtype(np.uint16): "NCCL_FLOAT16"}
    try:
        return getattr(nccl, names[np.dtype(dtype)])
    except KeyError:
        raise TypeError(f"NCCL cannot transfer arrays of dtype {dtype}") from None


class NCCLPending(Pending):
    def __init__(self, event, source=None, keep=()):
        self.event = event
        self.source = source
        self.keep = keep

    def test(self):
        return self.event.done

    def finish(self):
        cp = backend.require_cuda()
        cp.cuda.get_current_stream().wait_event(self.event)


class NCCLCommunicator(Communicator):
    def __init__(self, mpi_comm):
        nccl = _nccl()
        cp = backend.require_cuda()
        self.rank, self.size = mpi_comm.Get_rank(), mpi_comm.Get_size()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = mpi_comm.bcast(uid, root=0)
        self.nccl = nccl
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.ops = {"sum": nccl.NCCL_SUM, "product": nccl.NCCL_PROD, "max": nccl.NCCL_MAX,
                    "min": nccl.NCCL_MIN}

    def _run(self, launch, source=None, keep=()):
        """Order after the current stream, launch on our stream, return its completion
        (which holds `keep`, scratch arrays the stream uses, until then)."""
        cp = backend.require_cuda()
        self.stream.wait_event(cp.cuda.get_current_stream().record())
        launch(self.stream.ptr)
        return NCCLPending(self.stream.record(), source, keep)

    def _args(self, arr):
        return arr.data.ptr, arr.size, _dtype_code(self.nccl, arr.dtype)

    def Iallreduce(self, buf, op):
        ptr, n, dt = self._args(buf)
        return self._run(lambda s: self.comm.allReduce(ptr, ptr, n, dt, self.ops[op], s))

    def Ibcast(self, buf, root):
        ptr, n, dt = self._args(buf)
        return self._run(lambda s: self.comm.bcast(ptr, n, dt, root, s))

    def Ireduce(self, buf, root, op):
        ptr, n, dt = self._args(buf)
        return self._run(lambda s: self.comm.reduce(ptr, ptr, n, dt, self.ops[op], root, s))

    def Iallgather(self, sendbuf, recvbuf):
        sptr, n, dt = self._args(sendbuf)
        return self._run(lambda s: self.comm.allGather(sptr, recvbuf.data.ptr, n, dt, s))

    def Ireduce_scatter(self, sendbuf, recvbuf, op):
        rptr, n, dt = self._args(recvbuf)
        return self._run(lambda s: self.comm.reduceScatter(sendbuf.data.ptr, rptr, n, dt,
                                                           self.ops[op], s))

    def Ireduce_scatter_v(self, sendbuf, recvbuf, counts, op):
        """NCCL needs equal counts: every part is padded to the largest (with zeros)."""
        cp = backend.require_cuda()
        width, at = max(counts), offsets(counts)
        padded = cp.zeros(self.size * width, sendbuf.dtype)
        part = cp.empty(width, recvbuf.dtype)

        def launch(s):
            with self.stream:
                for k in range(self.size):
                    padded[k * width:k * width + counts[k]] = sendbuf[at[k]:at[k + 1]]
            self.comm.reduceScatter(padded.data.ptr, part.data.ptr, width,
                                    _dtype_code(self.nccl, part.dtype), self.ops[op], s)
            with self.stream:
                recvbuf[...] = part[:counts[self.rank]]
        return self._run(launch, keep=(padded, part))

    def Iallgatherv(self, sendbuf, recvbuf, counts):
        """NCCL needs equal counts: every rank's part travels padded to the largest."""
        cp = backend.require_cuda()
        width, at = max(counts), offsets(counts)
        part = cp.zeros(width, sendbuf.dtype)
        padded = cp.empty(self.size * width, recvbuf.dtype)

        def launch(s):
            with self.stream:
                part[:sendbuf.size] = sendbuf
            self.comm.allGather(part.data.ptr, padded.data.ptr, width,
                                _dtype_code(self.nccl, part.dtype), s)
            with self.stream:
                for k in range(self.size):
                    recvbuf[at[k]:at[k + 1]] = padded[k * width:k * width + counts[k]]
        return self._run(launch, keep=(part, padded))

    def _grouped(self, sends, recvs):
        """Point-to-point transfers as one NCCL group: sends/recvs are (array, peer)."""
        def launch(s):
            self.nccl.groupStart()
            for arr, peer in sends:
                self.comm.send(arr.data.ptr, arr.size, _dtype_code(self.nccl, arr.dtype), peer, s)
            for arr, peer in recvs:
                self.comm.recv(arr.data.ptr, arr.size, _dtype_code(self.nccl, arr.dtype), peer, s)
            self.nccl.groupEnd()
        return launch

    def Igather(self, sendbuf, recvbuf, root):
        recvs = [(recvbuf[k], k) for k in range(self.size)] if self.rank == root else []
        return self._run(self._grouped([(sendbuf, root)], recvs))

    def Iscatter(self, sendbuf, recvbuf, root):
        sends = [(sendbuf[k], k) for k in range(self.size)] if self.rank == root else []
        return self._run(self._grouped(sends, [(recvbuf, root)]))

    def Ialltoallv(self, sendbuf, sendcounts, recvbuf, recvcounts):
        so, ro = offsets(sendcounts), offsets(recvcounts)
        sends = [(sendbuf[so[k]:so[k + 1]], k) for k in range(self.size)]
        recvs = [(recvbuf[ro[k]:ro[k + 1]], k) for k in range(self.size)]
        return self._run(self._grouped(sends, recvs))

    def Isend(self, buf, dest, tag):
        return self._run(self._grouped([(buf, dest)], []))

    def Irecv(self, buf, source, tag):
        if source is None:
            raise ValueError("recv from any source is not supported with NCCL; give src")
        return self._run(self._grouped([], [(buf, source)]), source)

    def Ibarrier(self):
        cp = backend.require_cuda()
        token = cp.zeros(1, dtype=cp.float32)
        return self.Iallreduce(token, "sum")

    def abort(self):
        """ncclCommAbort: frees kernels stuck in a mismatched collective."""
        self.comm.abort()
