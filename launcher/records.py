"""How each rank of a job stands, as its supervisor (launcher/rank.py) tells `dtrain launch`.

Each rank has one JSON file in the launcher's control directory: a RUNNING record as the rank
starts (with the process group the launcher kills if the rank outlives the grace period),
then an end record, which is final. The launcher reads them to stop the job when a rank
fails, to choose the job's exit code and to name the root cause.
"""
import enum
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


class Kind(enum.Enum):
    """Where a rank stands."""

    RUNNING = "running"  # started, not ended yet
    OK = "ok"  # exited 0
    EXIT = "exit"  # exited with a non-zero code
    EXCEPTION = "exception"  # raised; `text` is the traceback
    SIGNAL = "signal"  # killed by a signal; `code` is 128 + N


@dataclass(frozen=True)
class RankRecord:
    """One rank's record. `pid` is the process that runs the rank's target; `text` is what
    the report prints (a traceback, or e.g. "killed by SIGKILL: out of memory, ...")."""

    rank: int
    kind: Kind
    code: int = 0
    text: str = ""
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    pgid: int = field(default_factory=os.getpgrp)
    time: float = field(default_factory=time.time)

    @property
    def ended(self):
        return self.kind is not Kind.RUNNING

    @property
    def failed(self):
        return self.kind in (Kind.EXIT, Kind.EXCEPTION, Kind.SIGNAL)

    def to_json(self):
        return json.dumps({**asdict(self), "kind": self.kind.value})

    @classmethod
    def from_json(cls, text):
        data = json.loads(text)
        return cls(**{**data, "kind": Kind(data["kind"])})


def _path(control_dir, rank):
    return Path(control_dir) / f"rank_{rank}.json"


def write(control_dir, record):
    """Store `record` as its rank's record, unless that rank's end is already recorded (the
    first end record wins: the child's traceback over its supervisor's exit code)."""
    path = _path(control_dir, record.rank)
    if path.exists() and RankRecord.from_json(path.read_text()).ended:
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # readers never see half a record
    tmp.write_text(record.to_json())
    os.replace(tmp, path)


def read_all(control_dir):
    """Every rank's record, oldest first."""
    found = [RankRecord.from_json(p.read_text()) for p in Path(control_dir).glob("rank_*.json")]
    return sorted(found, key=lambda r: r.time)
