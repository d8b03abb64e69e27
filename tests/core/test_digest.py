"""kit.core.digest: a file's sha256 is read again whenever its bytes may have changed, and only then."""
from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from kit.core import digest


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """file_digests with a cache of its own and a count of the files it actually read; RACY_S 0 so that files just
    written are remembered."""
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(digest, "RACY_S", 0.0)
    reads = []
    real = digest.sha256_of
    monkeypatch.setattr(digest, "sha256_of", lambda path: reads.append(path.name) or real(path))
    return reads


def test_an_unchanged_file_is_not_read_again(counted, tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.csv"
    a.write_bytes(b"weights" * 1000)
    b.write_bytes(b"id,label\n")
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert digest.file_digests([a, b]) == expected
    assert digest.file_digests([a, b]) == expected
    assert counted == ["a.pt", "b.csv"]                    # the second call read nothing


def test_a_byte_changed_in_place_under_a_restored_mtime_is_read_again(counted, tmp_path):
    """Same inode, same size, mtime set back as `touch -d`/`cp -p` would: only the change time tells."""
    a = tmp_path / "best.pt"
    a.write_bytes(bytes(4096))
    first = digest.file_digests([a])[0]
    st = os.stat(a)
    with open(a, "r+b") as f:
        f.seek(100)
        f.write(b"\x01")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(a).st_size == st.st_size and os.stat(a).st_mtime_ns == st.st_mtime_ns
    second = digest.file_digests([a])[0]
    assert second != first and second == hashlib.sha256(a.read_bytes()).hexdigest()
    assert counted == ["best.pt", "best.pt"]


def test_a_file_replaced_by_rename_is_read_again(counted, tmp_path):
    a, other = tmp_path / "oof.csv", tmp_path / "other.csv"
    a.write_text("id,p\n1,0.5\n")
    other.write_text("id,p\n1,0.7\n")
    first = digest.file_digests([a])[0]
    shutil.copystat(a, other)                              # same times, then moved over: a new inode
    os.replace(other, a)
    assert digest.file_digests([a])[0] != first


def test_a_file_written_moments_ago_is_not_remembered(monkeypatch, tmp_path):
    """Git's racy-clean rule: the kernel's coarse time stamps could hide a second write in the same tick."""
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    a = tmp_path / "best.pt"
    a.write_bytes(b"x" * 10)
    digest.file_digests([a])
    assert not (tmp_path / "cache" / "file-digests.json").exists()


def test_an_unwritable_cache_still_gives_every_digest(monkeypatch, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(digest, "RACY_S", 0.0)
    a = tmp_path / "a.bin"
    a.write_bytes(b"abc")
    assert digest.file_digests([a, a]) == [hashlib.sha256(b"abc").hexdigest()] * 2


def test_a_damaged_cache_is_started_again(counted, tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"abc")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "file-digests.json").write_text("{not json")
    assert digest.file_digests([a]) == [hashlib.sha256(b"abc").hexdigest()]
    assert digest.file_digests([a]) == [hashlib.sha256(b"abc").hexdigest()] and counted == ["a.bin"]
