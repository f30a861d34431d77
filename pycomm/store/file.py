"""FileStore: a store in a shared directory."""
import fcntl
import hashlib
import os
import tempfile
import time
import urllib.parse

from ..errors import TimeoutError
from .base import Store, remaining

__all__ = ["FileStore"]


class FileStore(Store):
    """A store in a directory, for ranks that share a filesystem and nothing else.

    Each key is one file, replaced atomically (write a temp file, rename), so a
    reader sees either no value or a whole one. `get` polls. Counters are
    updated under an flock on one lock file. Files are created 0600 and a
    missing directory 0700: store values may carry addresses and tokens.
    """

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock_path = os.path.join(self.directory, ".lock")

    def _path(self, key):
        # Quote "/" and every other special character so a key is one file inside the directory.
        name = urllib.parse.quote(key, safe="")
        if len(name) > 200:  # file names are limited to 255 bytes
            return os.path.join(self.directory, "h_" + hashlib.sha256(key.encode()).hexdigest())
        return os.path.join(self.directory, "k_" + name)

    def set(self, key, value):
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")  # mkstemp creates 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.rename(tmp, self._path(key))
        except BaseException:
            os.unlink(tmp)
            raise

    def get(self, key, timeout):
        path = self._path(key)
        start = time.monotonic()
        deadline = start + timeout
        delay = 0.001
        while True:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                pass
            left = remaining(deadline)
            if left == 0:
                raise TimeoutError(
                    f"FileStore {self.directory}: get({key!r}) timed out after {time.monotonic() - start:.2f}s"
                )
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    def add(self, key, amount):
        # Open the lock file per call: flock locks belong to the open file, and a
        # descriptor inherited across fork would be one lock shared by both processes.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held only for a read and a write; released if the holder dies
            try:
                with open(self._path(key), "rb") as f:
                    total = int(f.read()) + amount
            except FileNotFoundError:
                total = amount
            self.set(key, str(total).encode())
            return total
        finally:
            os.close(fd)

    def delete(self, key):
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def close(self):
        pass  # nothing is held between calls
