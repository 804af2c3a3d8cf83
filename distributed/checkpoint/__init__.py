"""Distributed checkpoints with `torch.distributed.checkpoint`'s names
(`import dtrain.distributed.checkpoint as dcp`): `save` / `async_save` / `load` of sharded
state dicts that reshard to any world size, and `get_state_dict` / `set_state_dict`."""
from dtrain.distributed.checkpoint.planner import ShardedTensor  # noqa: F401
from dtrain.distributed.checkpoint.state_dict import (StateDictOptions,  # noqa: F401
                                                      get_model_state_dict,
                                                      get_optimizer_state_dict,
                                                      get_state_dict, set_model_state_dict,
                                                      set_optimizer_state_dict,
                                                      set_state_dict)
from dtrain.distributed.checkpoint.state_dict_loader import load  # noqa: F401
from dtrain.distributed.checkpoint.state_dict_saver import async_save, save  # noqa: F401
