"""One campaign per output directory at a time: ``<out>/.selfcal-batch.lock``.

The lock file is created atomically (``O_CREAT | O_EXCL``) and holds JSON with host, pid,
process start time and the campaign start time. A second run refuses with
:class:`CampaignLockedError`. A lock left by a dead run on this host (pid gone, or the pid
now belongs to a younger process) is stale and taken over, so a crash never leaves the
directory stuck. Locks from another host cannot be checked and are never taken over.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from selfcal_batch.errors import CampaignLockedError, OutputDirError

log = logging.getLogger(__name__)
LOCK_NAME = ".selfcal-batch.lock"
#: A lock file that stays unreadable/empty this long is considered abandoned.
_TORN_GRACE_S = 30.0


def _proc_start_time(pid: int) -> float | None:
    try:
        import psutil  # inside the try: without psutil the start time is unknown (None)

        return psutil.Process(pid).create_time()
    except Exception:  # psutil missing, no such process, access denied
        return None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (on this host)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's JSON, or None when absent/unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def is_stale(info: dict[str, Any] | None, path: Path) -> bool:
    """A lock is stale when its owner (on this host) is dead or the pid was reused."""
    if info is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > _TORN_GRACE_S
    if info.get("host") != socket.gethostname():
        return False
    pid = int(info.get("pid", 0))
    if not pid_alive(pid):
        return True
    started = _proc_start_time(pid)
    owner_started = info.get("process_start")
    if started is not None and owner_started is not None and started > float(owner_started) + 1.0:
        return True  # pid reused by a younger process
    return False


class CampaignLock:
    """Context manager holding ``<out>/.selfcal-batch.lock``."""

    def __init__(self, out_dir: str | Path, campaign: str = ""):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.campaign = campaign
        self.info: dict[str, Any] | None = None

    def acquire(self) -> "CampaignLock":
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in its place, a read-only or missing parent
            raise OutputDirError(f"cannot create output directory {self.out_dir}: "
                                 f"{exc.strerror or exc}") from None
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_start": _proc_start_time(os.getpid()),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "campaign": self.campaign,
            "argv": sys.argv,
        }
        with _dir_mutex(self.out_dir):
            for _ in range(3):
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    other = read_lock(self.path)
                    if is_stale(other, self.path):
                        who = f"pid {other.get('pid')} on {other.get('host')}" if other else "unknown owner"
                        log.warning("taking over stale lock %s (%s, dead)", self.path, who)
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(self.path)
                        continue
                    raise locked_error(self.out_dir, other) from None
                except OSError as exc:  # read-only file system, permission denied
                    raise OutputDirError(f"output directory {self.out_dir} is not writable: cannot create "
                                         f"{self.path.name} ({exc.strerror or exc})") from None
                with os.fdopen(fd, "w") as fh:
                    json.dump(info, fh, indent=1)
                    fh.flush()
                    os.fsync(fh.fileno())
                self.info = info
                log.debug("acquired %s", self.path)
                return self
        raise CampaignLockedError(f"output directory {self.out_dir} is in use (could not take the lock)")

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self.info is None:
            return
        cur = read_lock(self.path)
        if cur and cur.get("pid") == self.info["pid"] and cur.get("host") == self.info["host"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.info = None

    def __enter__(self) -> "CampaignLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def locked_error(out_dir: Path, info: dict[str, Any] | None) -> CampaignLockedError:
    if not info:
        return CampaignLockedError(f"output directory {out_dir} is in use (lock file "
                                   f"{Path(out_dir) / LOCK_NAME} is being written)")
    return CampaignLockedError(
        f"output directory {out_dir} is in use by pid {info.get('pid')} on host "
        f"{info.get('host')} since {info.get('started')}")


@contextlib.contextmanager
def _dir_mutex(directory: Path) -> Iterator[None]:
    """Serialise check-and-takeover between processes (best effort: flock on the dir)."""
    fd = None
    try:
        fd = os.open(directory, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:  # e.g. a filesystem without flock; O_EXCL still protects creation
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL):
            log.debug("flock on %s failed: %s", directory, exc)
    try:
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
