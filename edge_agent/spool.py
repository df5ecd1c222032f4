"""A write-ahead spool: a JSON Lines file used as a first-in first-out queue that outlives the process.

Each record is appended with a single ``write()``: once :meth:`Spool.append` returns, the
record is in the file, and a SIGKILL of the process can neither lose nor tear it. One
consumer reads records in order and acknowledges each one; how far it got (the cursor)
is kept in a small state file next to the spool, so a later process resumes at the first
unacknowledged record. Delivery is therefore at least once: a record whose delivery was
under way when the process died is offered again.

    PATH         the records, one JSON object per line, oldest first
    PATH.state   "<cursor> <inode of PATH>"; flock-ed by the process using the spool

The acknowledged prefix is dropped as the consumer catches up (and rewritten away when it
grows large), and at :meth:`Spool.close` the file holds exactly the records not yet
acknowledged; an empty spool is removed. Only one process uses a spool at a time: a
second one gets :class:`~yolo_edge.errors.ConfigError`.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "hook.jsonl"
>>> spool = Spool(path)
>>> spool.append({"n": 1}), spool.append({"n": 2})
(True, True)
>>> entry = spool.peek()
>>> entry.record, spool.pending
({'n': 1}, 2)
>>> spool.ack(entry)
>>> spool.close()
1
>>> [json.loads(line) for line in path.read_text().splitlines()]
[{'n': 2}]
>>> read_pending(path)
[{'n': 2}]
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from yolo_edge.errors import ConfigError

__all__ = ["Spool", "SpoolEntry", "read_pending", "write_line"]

logger = logging.getLogger(__name__)

#: rewrite the file without its acknowledged prefix once that prefix is this large and at
#: least as large as what is left (so each byte is copied at most about once)
COMPACT_AT_BYTES = 4 << 20
_CHUNK = 64 << 10


def write_line(fd: int, data: bytes) -> None:
    """Write ``data`` (one or more whole lines) to ``fd``; on failure leave no partial line behind."""
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, data[done:])
    except OSError:
        if done:  # a short write (disk full): cut our fragment off so the next line starts clean
            try:
                os.ftruncate(fd, os.fstat(fd).st_size - done)
            except OSError:
                logger.exception("could not remove a partial line after a failed write")
        raise


def _ends_with_newline(fd: int, size: int) -> bool:
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def _read_line(fd: int, offset: int, end: int) -> tuple[bytes, int]:
    """The line starting at ``offset`` (without its newline) and the offset after it."""
    buf = b""
    pos = offset
    while pos < end:
        chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
        if not chunk:
            break
        cut = chunk.find(b"\n")
        if cut >= 0:
            return buf + chunk[:cut], pos + cut + 1
        buf += chunk
        pos += len(chunk)
    return buf, end  # only a torn last line has no newline: the caller sees it as corrupt


def _count_records(fd: int, start: int, end: int) -> int:
    """Lines between ``start`` and ``end`` with something on them (blank lines are no records)."""
    n, pos, filled = 0, start, False  # filled: the line under way has a non-blank byte
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        if not chunk:
            break
        *done, rest = chunk.split(b"\n")
        for line in done:
            n += filled or bool(line.strip())
            filled = False
        filled = filled or bool(rest.strip())
        pos += len(chunk)
    return n


@dataclass(frozen=True)
class SpoolEntry:
    """The oldest unacknowledged record; ``record`` is None when its line is not valid JSON."""

    record: dict | None
    raw: bytes
    end: int


class Spool:
    """A file-backed FIFO of JSON objects; safe to append from one thread while another consumes."""

    def __init__(self, path: str | Path, *, max_pending_bytes: int = 512 << 20) -> None:
        self.path = Path(path)
        self.state_path = self.path.with_name(self.path.name + ".state")
        self.max_pending_bytes = max_pending_bytes
        self._lock = threading.Lock()
        self._rewriting = threading.Lock()  # one rewrite at a time (the consumer's, or close's)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._state_fd = os.open(self.state_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open spool {self.path}: {exc}; pass a writable spool path") from exc
        try:
            fcntl.flock(self._state_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._state_fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"spool {self.path} is in use by another process (an agent or replay-spool "
                                  "with the same webhook); give each one its own spool") from exc
            raise ConfigError(f"cannot lock spool {self.path}: {exc}") from exc
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            size = os.fstat(self._fd).st_size
            if not _ends_with_newline(self._fd, size):  # a torn line from a power loss: keep it apart
                write_line(self._fd, b"\n")
                size += 1
        except OSError as exc:
            os.close(self._state_fd)
            raise ConfigError(f"cannot open spool {self.path}: {exc}; pass a writable spool path") from exc
        self._inode = os.fstat(self._fd).st_ino
        self._end = size
        self._cursor = self._load_cursor()
        self._pending = _count_records(self._fd, self._cursor, self._end)
        self._closed = False
        self._write_state()

    # -- state file ------------------------------------------------------------------
    def _load_cursor(self) -> int:
        raw = os.pread(self._state_fd, 64, 0).decode("ascii", "replace").split()
        try:
            cursor, inode = int(raw[0]), int(raw[1])
        except (IndexError, ValueError):
            return 0
        # the spool was rewritten (new inode) or truncated after the state was written: the
        # file holds only unacknowledged records then; a cursor not on a line start is
        # damaged, and starting over offers records twice rather than losing any
        if inode != self._inode or cursor > self._end:
            return 0
        if cursor and os.pread(self._fd, 1, cursor - 1) != b"\n":
            logger.warning("spool state %s points inside a line; replaying %s from its start", self.state_path,
                           self.path)
            return 0
        return cursor

    def _write_state(self) -> None:
        line = b"%20d %20d\n" % (self._cursor, self._inode)  # fixed width: one in-place write
        os.pwrite(self._state_fd, line, 0)

    # -- producer --------------------------------------------------------------------
    def append(self, record: dict) -> bool:
        """Append one record; False (nothing written) when the spool is full or the disk fails."""
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._closed:
                return False
            if self._end - self._cursor + len(data) > self.max_pending_bytes:
                return False
            try:
                write_line(self._fd, data)
            except OSError as exc:
                logger.error("cannot write to spool %s: %s", self.path, exc)
                return False
            self._end += len(data)
            self._pending += 1
            return True

    # -- consumer (one thread) -------------------------------------------------------
    @property
    def pending(self) -> int:
        return self._pending

    def peek(self) -> SpoolEntry | None:
        """The oldest unacknowledged record, or None when there is none (blank lines are passed over)."""
        with self._lock:
            while True:
                if self._closed or self._cursor >= self._end:
                    return None
                raw, nxt = _read_line(self._fd, self._cursor, self._end)
                if raw.strip():
                    break
                self._skip_to(nxt)  # a blank line (an edited file, an `echo >>`) holds no result
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        return SpoolEntry(record if isinstance(record, dict) else None, raw, nxt)

    def ack(self, entry: SpoolEntry) -> None:
        """Mark ``entry`` (the one :meth:`peek` returned) as done; it will not be offered again.

        Cheap: when the consumer has caught up the file is truncated; a large acknowledged
        prefix behind a backlog is left for :meth:`compact`, which the caller runs outside its own locks.
        """
        with self._lock:
            if self._closed:
                return
            self._pending -= 1
            self._skip_to(entry.end)

    def _skip_to(self, offset: int) -> None:
        """Move the cursor past what is done (lock held); truncate the file once it is all done."""
        self._cursor = offset
        if self._cursor == self._end:  # caught up: start the file over
            os.ftruncate(self._fd, 0)
            self._cursor = self._end = 0
        self._write_state()

    def compact(self) -> None:
        """Rewrite the file without its acknowledged prefix if that prefix has grown large."""
        with self._lock:
            due = not self._closed and self._cursor >= COMPACT_AT_BYTES and self._cursor >= self._end - self._cursor
        if due:
            self._rewrite()

    def _rewrite(self) -> None:
        """Drop the acknowledged prefix: copy the rest to a new file, then swap it in."""
        with self._rewriting:
            self._rewrite_locked()

    def _rewrite_locked(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with self._lock:
                start, mid = self._cursor, self._end
            self._copy(start, mid, out)  # the bulk without the lock: appends go on meanwhile
            with self._lock:
                if self._closed or self._cursor != start:  # acknowledged meanwhile: next time
                    return
                self._copy(mid, self._end, out)
                os.fsync(out)
                os.replace(tmp, self.path)
                old, self._fd = self._fd, os.open(self.path, os.O_RDWR | os.O_APPEND)
                os.close(old)
                self._inode = os.fstat(self._fd).st_ino
                self._end -= start
                self._cursor = 0
                self._write_state()  # a crash before this line leaves the old inode in the state: cursor 0
        finally:
            os.close(out)
            tmp.unlink(missing_ok=True)

    def _copy(self, start: int, end: int, out: int) -> None:
        pos = start
        while pos < end:
            chunk = os.pread(self._fd, min(1 << 20, end - pos), pos)
            if not chunk:
                break
            write_line(out, chunk)
            pos += len(chunk)

    def close(self) -> int:
        """Leave only unacknowledged records in the file (none: remove it); return how many."""
        with self._lock:
            if self._closed:
                return self._pending
        if self._cursor:
            self._rewrite()
        with self._lock:
            self._closed = True
            try:
                if self._pending == 0:
                    self.path.unlink(missing_ok=True)
                    self.state_path.unlink(missing_ok=True)
                else:
                    os.fsync(self._fd)
                    os.fsync(self._state_fd)
            finally:
                os.close(self._fd)
                os.close(self._state_fd)  # releases the lock
            return self._pending


def read_pending(path: str | Path) -> list[dict]:
    """The records of a spool not yet acknowledged, oldest first (read-only; no lock taken)."""
    path = Path(path)
    if not path.exists():
        return []
    state = path.with_name(path.name + ".state")
    data = path.read_bytes()
    cursor = 0
    if state.exists():
        raw = state.read_text().split()
        if len(raw) == 2 and int(raw[1]) == path.stat().st_ino and int(raw[0]) <= len(data):
            cursor = int(raw[0])
    out = []
    for line in data[cursor:].splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
