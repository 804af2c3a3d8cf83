"""Checkpoint helpers with `torch.distributed.checkpoint`'s names."""
