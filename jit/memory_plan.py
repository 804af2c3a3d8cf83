"""Which op forwards can write their result into a given array: the memory planner's table.

An op's class does not say it; graph mode decides which nodes get a preallocated result
buffer (`forward(..., out=buffer)`, passes.py's memory plan, executor.py's replay):
- INTO: the forward writes its result into `out`, an array of the result's shape and dtype;
- IN_PLACE: the same, and `out` may be one of the inputs (a single ufunc, or a chain of
  them that never reads an input after writing), so chains can run in place;
- COPY: a view op (reshape, sum_to_size) whose recorded call copied (its result shares no
  memory with its input, e.g. flattening a channels-last array): it writes that copy into
  `out`, a C-contiguous array. A call that returned a view stays a view (not planned).
Every op whose forward is one generated ufunc forward (`forward.ufunc`, autograd/ops/_util.py:
add, mul, exp, tanh, comparisons...) is IN_PLACE without an entry; a fused group (fusion.py)
is INTO. The table lists the other forwards that take `out=`: the heavy ops, whose results
dominate a step's memory, the hand-written pointwise forwards of common activations, and
the small ops of a loss (cross-entropy's log_softmax, gather, where, cast, scatter_add),
dropout's mask, BatchNorm and copying reshapes, so that a replayed training step allocates no
array but what it returns (benchmarks/compile.py counts them: none for its MLP, CNN and
ResNet-20 steps).
"""
INTO = "into"
IN_PLACE = "in_place"
COPY = "copy"

OUT = {  # registry op name -> how its forward takes `out=`
    "matmul": INTO, "linear": INTO, "conv": INTO, "conv_transpose": INTO, "conv_weight": INTO,
    "max_pool": INTO, "max_pool_values": INTO, "max_pool_grad": INTO, "sum": INTO,
    "relu": IN_PLACE, "sigmoid": INTO, "sigmoid_backward": INTO, "tanh_backward": INTO,
    "log_softmax": INTO, "where": INTO, "cast": INTO, "gather": INTO, "scatter_add": INTO,
    "dropout_mask": INTO, "channel_sum": INTO,
    "batch_norm": INTO, "channel_linear": INTO,
    "reshape": COPY, "sum_to_size": COPY,
}


def out_mode(op):
    """How op class `op`'s forward takes `out=`: INTO, IN_PLACE, or None (it does not)."""
    if getattr(op, "members", None) is not None:  # a fused group (fusion.py)
        return INTO
    if getattr(op.forward, "ufunc", None) is not None:
        return IN_PLACE
    return OUT.get(getattr(op, "op_name", None))
