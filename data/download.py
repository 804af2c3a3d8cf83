"""Downloads for the built-in data sets: checksums, a lock between processes, atomic files.

The ranks of a job (on one node or many sharing a file system) ask for the same files at the
same time. `file_lock` makes them take turns: the first downloads, verifies and unpacks while
the others wait, then find the files in place. Independently of the lock, a file appears
under its final name only when complete (written under a unique temporary name, then
renamed), so no reader sees a partial file and an interrupted download leaves none behind
that could pass for the real one.
"""
import contextlib
import fcntl
import hashlib
import os
import shutil
import tarfile
import tempfile
import uuid
import warnings


def _mismatch(path, md5, sha256):
    """(algorithm, actual digest, expected digest) of the first checksum `path` fails, or None."""
    for name, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        digest = hashlib.new(name)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected.lower():
            return name, digest.hexdigest(), expected
    return None


def verify_checksum(path, md5=None, sha256=None):
    """Raise RuntimeError unless the file at `path` has the given md5 and/or sha256 digest."""
    bad = _mismatch(path, md5, sha256)
    if bad:
        raise RuntimeError(f"{path}: {bad[0]} checksum is {bad[1]} but expected {bad[2]}; the "
                           "file is corrupted or incomplete. Delete it and download again.")


def check_integrity(path, md5=None, sha256=None):
    """Whether `path` exists and matches the given checksums."""
    return os.path.isfile(path) and _mismatch(path, md5, sha256) is None


def download_url(url, path, md5=None, sha256=None, timeout=60):
    """Fetch `url` to `path`, which appears only once the checksum is verified.

    The bytes go to a temporary file of a unique name next to `path`, renamed over it when
    verified: concurrent calls never share a file. `timeout` (seconds) bounds each wait for
    the server, not the whole transfer.
    """
    import urllib.request  # here: it adds ~30 ms to `import dtrain` and only downloads need it

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.part"
    try:
        with open(tmp, "xb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out, 1 << 20)
        bad = _mismatch(tmp, md5, sha256)
        if bad:
            raise RuntimeError(f"{url}: the downloaded file has {bad[0]} checksum {bad[1]} but "
                               f"{os.path.basename(path)} should have {bad[2]} (a wrong URL "
                               "or checksum, or a corrupted transfer); nothing was kept")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive lock on the file `path` (created if missing) for a `with` block.

    `fcntl.flock` excludes processes on other nodes too where the shared file system supports
    it (NFS, as a byte-range lock; GPFS; Lustre mounted with `-o flock`). Where it does not,
    this warns and goes on unlocked: the files stay whole, each process just downloads its
    own copy. The lock file stays: removing it would let a waiting process hold a lock on a
    file that newcomers no longer see.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            warnings.warn(f"cannot lock {path} ({exc.strerror}): the file system does not "
                          "support file locks, so every process downloads its own copy",
                          stacklevel=3)
        yield
    finally:
        os.close(fd)  # releases the lock


def extract_archive(archive, dest):
    """Unpack the tar archive `archive` (any compression) into `dest`, each file appearing
    only when complete.

    Members are unpacked into a private folder inside `dest`, then each file is renamed into
    place. The `data` filter refuses members that would land outside `dest`.
    """
    os.makedirs(dest, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".extract-", dir=dest)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        for folder, _, files in os.walk(staging):
            target = os.path.join(dest, os.path.relpath(folder, staging))
            os.makedirs(target, exist_ok=True)
            for name in files:
                os.replace(os.path.join(folder, name), os.path.join(target, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
