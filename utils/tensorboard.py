"""`dt.utils.tensorboard.SummaryWriter`, as `torch.utils.tensorboard`'s: TensorBoard event
files, their summaries built by tensorboardX (`pip install 'dtrain[tensorboard]'`).

NOTE: tensorboardX rather than the tensorboard package: it needs only protobuf and NumPy
(tensorboard brings grpcio, werkzeug, markdown and a web server; it is for viewing) and is
maintained. Its own writer is not used: its flush() leaves events queued for a background
thread, and two writers opened in one second share a file name (the second truncates the
first, as a quickly restarted run would). The events are written here, synchronously, to
files named by time, host, process and a counter, as PyTorch names them.
"""
import itertools
import os
import socket
import time
from datetime import datetime

from dtrain.core.tensor import Tensor

_files = itertools.count()


def _tbx():
    try:
        import tensorboardX
        from tensorboardX import record_writer, summary
        from tensorboardX.proto import event_pb2
    except ImportError:
        raise ImportError("dt.utils.tensorboard needs tensorboardX: pip install "
                          "'dtrain[tensorboard]'") from None
    return tensorboardX, record_writer, summary, event_pb2


def _tensorflow_bins():
    """TensorFlow's default histogram bucket edges: 0 and +-1e-12 * 1.1**k below 1e20."""
    edges, v = [], 1e-12
    while v < 1e20:
        edges.append(v)
        v *= 1.1
    return [-v for v in reversed(edges)] + [0] + edges


def _host(value):
    """A Tensor as a NumPy array on the host; anything else as it is."""
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else value


class _EventFile:
    """A new event file in `log_dir`: events are queued and written when `max_queue` are
    pending, on the first event `flush_secs` after the last write, on flush and on close."""

    def __init__(self, log_dir, max_queue, flush_secs, filename_suffix):
        _, record_writer, _, self._pb = _tbx()
        os.makedirs(log_dir, exist_ok=True)
        # NOTE: TensorBoard reads a folder's event files in name order, so the nanoseconds
        # keep files made within one second (a quick restart) in the order they were made.
        sec, ns = divmod(time.time_ns(), 10**9)
        name = (f"events.out.tfevents.{sec:010d}.{socket.gethostname()}.{ns:09d}."
                f"{os.getpid()}.{next(_files)}{filename_suffix}")
        self._file = record_writer.RecordWriter(os.path.join(log_dir, name))
        self._max_queue, self._flush_secs = max_queue, flush_secs
        self._pending, self._written = [], time.monotonic()
        self.add(self._pb.Event(file_version="brain.Event:2"))

    def add(self, event, step=None, walltime=None):
        event.wall_time = time.time() if walltime is None else walltime
        if step is not None:
            event.step = int(step)
        self._pending.append(event.SerializeToString())
        if len(self._pending) >= self._max_queue or \
                time.monotonic() - self._written >= self._flush_secs:
            self.flush()

    def summary(self, summary, step=None, walltime=None):
        self.add(self._pb.Event(summary=summary), step, walltime)

    def flush(self):
        for data in self._pending:
            self._file.write(data)
        self._pending.clear()
        self._file.flush()
        self._written = time.monotonic()

    def close(self):
        self.flush()
        self._file.close()


class SummaryWriter:
    """Write scalars, histograms, text and hyperparameters to event files in `log_dir`
    (default runs/CURRENT_DATETIME_HOSTNAME`comment`). Events are queued (up to `max_queue`)
    and written at least every `flush_secs` while events come; with `purge_step`, events of
    that step and later already in `log_dir` are hidden (a run resumed from an earlier
    checkpoint)."""

    def __init__(self, log_dir=None, comment="", purge_step=None, max_queue=10, flush_secs=120,
                 filename_suffix=""):
        _, _, self._summary, pb = _tbx()
        if not log_dir:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")
        self.log_dir = str(log_dir)
        self._options = (max_queue, flush_secs, filename_suffix)
        self._file = _EventFile(self.log_dir, *self._options)
        if purge_step is not None:
            self._file.add(pb.Event(session_log=pb.SessionLog(status=pb.SessionLog.START)),
                           purge_step)
        self._runs = {}  # add_scalars' event files, one folder per tag

    def get_logdir(self):
        return self.log_dir

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None):
        """One value (a number or a one-element Tensor) of the curve `tag`."""
        self._file.summary(self._summary.scalar(tag, _host(scalar_value)), global_step, walltime)

    def add_scalars(self, main_tag, tag_scalar_dict, global_step=None, walltime=None):
        """Several curves on one chart: each tag is a run of its own, in the folder
        log_dir/<main_tag with "/" as "_">_<tag>, as PyTorch writes them."""
        walltime = time.time() if walltime is None else walltime
        for tag, value in tag_scalar_dict.items():
            run = os.path.join(self.log_dir, f"{main_tag.replace('/', '_')}_{tag}")
            if run not in self._runs:
                self._runs[run] = _EventFile(run, *self._options)
            self._runs[run].summary(self._summary.scalar(main_tag, _host(value)), global_step,
                                    walltime)

    def add_histogram(self, tag, values, global_step=None, bins="tensorflow", walltime=None,
                      max_bins=None):
        """The distribution of `values` (a Tensor or array of any shape) over `bins`
        ("tensorflow": TensorFlow's default buckets, or any of np.histogram's)."""
        if isinstance(bins, str) and bins == "tensorflow":
            bins = _tensorflow_bins()
        self._file.summary(self._summary.histogram(tag, _host(values), bins, max_bins),
                           global_step, walltime)

    def add_text(self, tag, text_string, global_step=None, walltime=None):
        self._file.summary(self._summary.text(tag, text_string), global_step, walltime)

    def add_hparams(self, hparam_dict, metric_dict, hparam_domain_discrete=None, run_name=None,
                    global_step=None):
        """One trial for the HParams dashboard: its hyperparameters (bool/str/int/float) and
        metrics, written as a run in log_dir/`run_name` (default: the current time)."""
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionary.")
        if hparam_domain_discrete is not None:
            raise NotImplementedError("add_hparams: hparam_domain_discrete is not supported "
                                      "(tensorboardX's hparams summary records no domains)")
        hparams = {k: v.item() if isinstance(v, Tensor) else v for k, v in hparam_dict.items()}
        trial = _EventFile(os.path.join(self.log_dir, run_name or str(time.time())),
                           *self._options)
        for pb in self._summary.hparams(hparams, metric_dict):
            trial.summary(pb)
        for tag, value in metric_dict.items():
            trial.summary(self._summary.scalar(tag, _host(value)), global_step)
        trial.close()

    def flush(self):
        """Write every pending event to disk."""
        for f in (self._file, *self._runs.values()):
            f.flush()

    def close(self):
        for f in (self._file, *self._runs.values()):
            f.close()
        self._runs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
