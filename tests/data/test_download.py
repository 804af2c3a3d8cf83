"""Download helpers: checksums, atomic downloads and unpacking, the lock (no network)."""
import errno
import hashlib
import tarfile

import pytest

from dtrain.data import download


def test_checksums_reject_corrupted_downloads(tmp_path):
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(b"the real bytes")
    md5 = hashlib.md5(b"the real bytes").hexdigest()
    sha = hashlib.sha256(b"the real bytes").hexdigest()
    download.verify_checksum(path, md5=md5, sha256=sha)
    assert download.check_integrity(path, md5=md5)
    path.write_bytes(b"the real bytez")
    with pytest.raises(RuntimeError, match="md5 checksum is .* but expected " + md5):
        download.verify_checksum(path, md5=md5)
    with pytest.raises(RuntimeError, match="sha256 checksum"):
        download.verify_checksum(path, sha256=sha)
    assert not download.check_integrity(path, md5=md5)
    assert not download.check_integrity(tmp_path / "missing", md5=md5)


def test_download_keeps_nothing_when_the_checksum_fails(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"tampered")
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=f"{source.as_uri()}: the downloaded file has md5 "
                       "checksum .* but file.bin should have 0000"):
        download.download_url(source.as_uri(), out / "file.bin", md5="0" * 32)  # no network
    assert list(out.iterdir()) == []
    download.download_url(source.as_uri(), out / "file.bin",
                          md5=hashlib.md5(b"tampered").hexdigest())
    assert [p.name for p in out.iterdir()] == ["file.bin"]
    assert (out / "file.bin").read_bytes() == b"tampered"


def test_extract_archive_moves_whole_files_into_place(tmp_path):
    staging = tmp_path / "staging"
    (staging / "top" / "sub").mkdir(parents=True)
    (staging / "top" / "sub" / "a.bin").write_bytes(b"a")
    (staging / "top" / "b.bin").write_bytes(b"b")
    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / "top", arcname="top")
    dest = tmp_path / "dest"
    (dest / "top").mkdir(parents=True)
    (dest / "top" / "b.bin").write_bytes(b"stale")  # a partial earlier attempt
    download.extract_archive(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["top"]  # no staging folder left
    assert (dest / "top" / "sub" / "a.bin").read_bytes() == b"a"
    assert (dest / "top" / "b.bin").read_bytes() == b"b"
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        tar.add(staging / "top" / "b.bin", arcname="../escaped.bin")
    with pytest.raises(tarfile.OutsideDestinationError):
        download.extract_archive(evil, dest)
    assert not (tmp_path / "escaped.bin").exists()
    assert [p.name for p in dest.iterdir()] == ["top"]


def test_file_lock_without_lock_support_warns_and_goes_on(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(download.fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .*x.lock .No locks available"):
        with download.file_lock(tmp_path / "x.lock"):
            pass
