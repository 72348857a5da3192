"""A file object for HDF5 (h5py's file-object driver) whose writes never fail inside HDF5.

A write that fails inside HDF5 (a full disk, the file size limit) leaves the library in a state
where closing the file crashes the process (measured: a segfault at close, with both the default
driver and a plain Python file). A file too large to build in memory (a compacted fragment of
512 MB or more) is therefore written through this object: the first failed write is kept, the rest
of that write and every later one go to a small in-memory overlay that later reads see, so HDF5
carries on undisturbed; the caller asks `failed` between HDF5 calls, stops, closes the HDF5 file
cleanly and raises the kept error. Nothing after the failure reaches the disk: the file is then
garbage, and the caller deletes it.
"""

from __future__ import annotations

import io
import os
import signal
import threading

__all__ = ["DeferredSignals", "GuardedFile"]


class GuardedFile(io.RawIOBase):
    """A new file at `path`, read-write, for `h5py.File(GuardedFile(path), "w")`."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self.pos = 0
        self.failed: OSError | None = None
        self._overlay: list[tuple[int, bytes]] = []  # (offset, bytes) written after the failure, in order
        self._size = 0  # of the file as HDF5 sees it once writes go to the overlay

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        end = self._end()
        self.pos = offset if whence == io.SEEK_SET else self.pos + offset if whence == io.SEEK_CUR else end + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def _end(self) -> int:
        return self._size if self.failed else os.fstat(self.fd).st_size

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self.fd, len(view), self.pos)
        n = len(data)
        view[:n] = data
        if self.failed:  # bytes HDF5 believes written: zeros where none landed, then the overlay
            end = min(len(view), max(0, self._size - self.pos))
            if end > n:
                view[n:end] = bytes(end - n)
                n = end
            for offset, chunk in self._overlay:  # later pieces win, as later writes would
                lo, hi = max(offset, self.pos), min(offset + len(chunk), self.pos + len(view))
                if lo < hi:
                    view[lo - self.pos:hi - self.pos] = chunk[lo - offset:hi - offset]
                    n = max(n, hi - self.pos)
        self.pos += n
        return n

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view) and self.failed is None:
            try:
                done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as exc:  # kept for the caller; HDF5 is told the write went through
                self.failed = exc
                self._size = max(os.fstat(self.fd).st_size, self.pos + done)
        if done < len(view):
            self._overlay.append((self.pos + done, bytes(view[done:])))
            self._size = max(self._size, self.pos + len(view))
        self.pos += len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if self.failed:
            self._size = size
        else:
            try:
                os.ftruncate(self.fd, size)
            except OSError as exc:
                self.failed, self._size = exc, size
        return size

    def flush(self) -> None:
        pass

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if not self.closed and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()


class DeferredSignals:
    """SIGINT and SIGTERM noted, not raised, while HDF5 may call a GuardedFile's Python methods: an
    exception raised inside one (Ctrl-C's KeyboardInterrupt lands at any Python line) is a failed
    I/O inside HDF5, the state that crashes the process. `deliver` raises them later, outside HDF5,
    through the handlers that were installed (the CLI's: one line, exit 130/143). Main thread only
    (the only one Python runs signal handlers in); elsewhere it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: list[int] = []
        self._saved: dict[int, object] = {}

    def _note(self, signum, frame) -> None:
        self.pending.append(signum)

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._saved:
            self._saved = {s: signal.signal(s, self._note) for s in self.SIGNALS}

    def stop(self) -> None:
        """Put the handlers back and raise what was noted meanwhile (through them)."""
        saved, self._saved = self._saved, {}
        for s, handler in saved.items():
            signal.signal(s, handler)
        if self.pending:
            signum = self.pending[0]
            self.pending.clear()
            signal.raise_signal(signum)
