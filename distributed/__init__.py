"""Distributed training over MPI (mpi4py) and NCCL (CuPy), with torch.distributed's names."""
from dtrain.distributed.collectives import (CommCounter, ReduceOp, all_gather,  # noqa: F401
                                            all_gather_into_tensor,
                                            all_gather_object, all_reduce, all_to_all_single,
                                            barrier, broadcast, broadcast_object_list, gather,
                                            irecv, isend, recv, reduce, reduce_scatter_tensor,
                                            scatter, send)
from dtrain.distributed.process_group import (ProcessGroup, destroy_process_group,  # noqa: F401
                                              get_backend, get_local_rank,
                                              get_local_world_size, get_rank, get_world_size,
                                              init_process_group, is_available, is_initialized,
                                              new_group)
from dtrain.distributed.work import CollectiveMismatchError, DistTimeoutError, Work  # noqa: F401
from dtrain.distributed import comm_hooks  # noqa: F401,E402
from dtrain.distributed.ddp import DistributedDataParallel  # noqa: F401,E402
from dtrain.distributed.sync_batchnorm import SyncBatchNorm  # noqa: F401,E402
from dtrain.distributed import optim  # noqa: F401,E402
from dtrain.distributed import fsdp  # noqa: F401,E402
