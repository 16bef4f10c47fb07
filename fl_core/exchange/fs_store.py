"""A local-directory object store with the same guarantees as S3 conditional writes.

Write-once is a hard link of a fully written temporary file onto the final name: ``link``
fails if the name exists, so readers never see a partial file and two writers never both win.
Compare-and-swap holds an ``flock`` on a sidecar lock file while it compares the etag and
renames the new content into place.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from stat import S_IRGRP, S_IROTH, S_IRUSR

from fl_core.errors import (
    ExchangeError,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    ObjectUnreadableError,
    PreconditionFailedError,
)
from fl_core.exchange.store import ObjectStore
from fl_core.hashing import sha256_hex
from fl_core.types import ETag, ObjectKey

_TMP_SUFFIX = ".fedsilo-tmp"
_LOCK_SUFFIX = ".fedsilo-lock"
_READ_ONLY = S_IRUSR | S_IRGRP | S_IROTH


def _etag_of(data: bytes) -> ETag:
    """The content's SHA-256: a replace that writes the same bytes keeps the same etag."""
    return sha256_hex(data)


def _files_under(folder: str) -> Iterator[str]:
    """Paths of the regular files below ``folder``, not following links to folders.

    ``os.scandir`` rather than ``Path.rglob`` + ``is_file``: the aggregator lists a round's
    updates every poll interval, and one stat call and two Path objects per file made that
    listing a noticeable share of a core for a federation of hundreds of hospitals.
    """
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _files_under(entry.path)
            elif entry.is_file():
                yield entry.path


class LocalDirectoryStore(ObjectStore):
    """Objects as files under ``root``; keys are relative POSIX paths.

    ``durable=False`` skips the fsync of every write: for a simulation's own exchange in its
    run folder, which other processes read through the page cache and which need not survive
    a power cut, the fsync was milliseconds per write for nothing. Atomicity (temporary file,
    then link or rename) is the same either way.
    """

    poll_backoff_cap_s = 0.25  # a read is a stat and a small file read, not a billed request

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.durable = durable
        self.root = root.resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ExchangeError(f"cannot create exchange folder {self.root}: {err}") from err

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: ObjectKey) -> Path:
        if key.startswith("/") or ".." in key.split("/") or not key:
            raise ExchangeError(f"invalid object key {key!r}")
        return self.root / key

    def _write_temp(self, path: Path, data: bytes) -> Path:
        # the folder usually exists (a round's updates folder gets hundreds of objects), so
        # create it only when the temporary file cannot be made, not with a mkdir per write
        try:
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=_TMP_SUFFIX)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=_TMP_SUFFIX)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        except BaseException:
            os.unlink(tmp_name)
            raise
        finally:
            os.close(fd)
        return Path(tmp_name)

    def put_new(self, key: ObjectKey, data: bytes, retain_until: datetime | None = None) -> None:
        """Write-once; a retained file is made read-only before it gets its name.

        Read-only is the most a folder can do (best effort): a write fails until the mode is
        changed back, which the file's owner (the aggregator's own user) and root can do, and
        anyone who may write the folder can still delete the file. The local store serves
        simulations and tests; the exchange that must hold against its owner is S3's.
        """
        path = self._path(key)
        tmp = self._write_temp(path, data)
        if retain_until is not None:
            os.chmod(tmp, _READ_ONLY)
        try:
            os.link(tmp, path)
        except FileExistsError as err:
            raise ObjectExistsError(f"{key} already exists in {self.describe()}") from err
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: ObjectKey) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as err:
            raise self._read_error(key, err) from err

    def get_bounded(self, key: ObjectKey, max_bytes: int) -> bytes:
        """The file, its size checked on the open file (one path lookup); ``get_verified``
        reads through it and hashes nothing: nothing vouches for a file on disk."""
        try:
            with open(self._path(key), "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > max_bytes:
                    raise ObjectTooLargeError(f"{key} is {size} bytes, limit {max_bytes}", size)
                return handle.read()
        except OSError as err:
            raise self._read_error(key, err) from err

    def get_head(self, key: ObjectKey, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read(length)
        except OSError as err:
            raise self._read_error(key, err) from err

    def _read_error(self, key: ObjectKey, err: OSError) -> ExchangeError:
        """A file its writer made unreadable to us (mode 000, a folder where a file belongs)
        is that object's fault, like an S3 object under a key we cannot use: never the
        store's."""
        if isinstance(err, FileNotFoundError):
            return ObjectNotFoundError(f"{key} not found in {self.describe()}")
        if isinstance(err, PermissionError | IsADirectoryError):
            return ObjectUnreadableError(f"cannot read {key} in {self.describe()}: {err}")
        return ExchangeError(f"cannot read {key} in {self.describe()}: {err}")

    def get_with_etag(self, key: ObjectKey) -> tuple[bytes, ETag]:
        data = self.get(key)
        return data, _etag_of(data)

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(f".{path.name}{_LOCK_SUFFIX}")
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def replace(self, key: ObjectKey, data: bytes, if_match: ETag | None) -> ETag:
        path = self._path(key)
        with self._locked(path):
            try:
                current: ETag | None = _etag_of(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != if_match:
                expected = "absent" if if_match is None else f"etag {if_match[:12]}"
                raise PreconditionFailedError(
                    f"{key} changed under us (expected {expected}); another writer advanced it"
                )
            tmp = self._write_temp(path, data)
            os.replace(tmp, path)
        return _etag_of(data)

    def size(self, key: ObjectKey) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as err:
            raise ObjectNotFoundError(f"{key} not found in {self.describe()}") from err

    def exists(self, key: ObjectKey) -> bool:
        return self._path(key).is_file()

    def list_versions(self, prefix: str) -> dict[ObjectKey, str]:
        # every write makes a new file (temporary file, then link or rename): a new inode
        versions = {}
        for key in self.list_keys(prefix):
            try:
                stat = self._path(key).stat()
            except FileNotFoundError:
                continue  # removed since the listing
            versions[key] = f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"
        return versions

    def list_keys(self, prefix: str) -> list[ObjectKey]:
        # a string prefix, as in S3: "federations/f1" also matches "federations/f10/..."
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / folder if folder else self.root
        if not start.is_dir():
            return []
        skip = len(str(self.root)) + 1
        keys = []
        for path in _files_under(str(start)):
            if path.endswith((_TMP_SUFFIX, _LOCK_SUFFIX)):
                continue
            key = path[skip:].replace(os.sep, "/")
            if key.startswith(prefix):
                keys.append(key)
        return sorted(keys)
