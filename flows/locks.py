"""One run per domain at a time: a per-domain file lock that the flow and `stillhouse stage` take.

    with domain_lock(root, "healthcare", wait=0, holder="stillhouse stage distill"):
        ...                         # nobody else writes data/healthcare/* or registers it now

Two runs of one domain would race on its stage folders, its dvc.lock entries and its next model
version. The lock is `flock` on `.cache/locks/<domain>.lock` in the project folder: the kernel
drops it when its process dies, so a killed run never leaves a stale lock. The file holds who
has it (pid, host, what, since) for the message the second run gets. Other domains run freely;
their dvc.lock writes are serialised by DVC's own repo lock (flows/dvc_lock.py waits for it).
Locks are per project folder: clones on other machines share only the registry and the DVC
remote, which serialise their own writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

POLL_SECONDS = 1.0  # how often a waiting run retries


class DomainBusy(RuntimeError):
    """Another run holds this domain's lock (and did not let go within `wait` seconds)."""


def lock_path(root: str | Path, domain: str) -> Path:
    return Path(root) / ".cache" / "locks" / f"{domain}.lock"


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the file ("unknown" while it is still writing)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"{info['what']} (pid {info['pid']} on {info['host']}, since {info['since']})"
    except (OSError, ValueError, KeyError):
        return "another process"


@contextlib.contextmanager
def domain_lock(root: str | Path, domain: str, wait: float = 0.0, holder: str = "stillhouse"):
    """Hold `domain`'s lock for the block; wait up to `wait` seconds for it, then raise DomainBusy."""
    path = lock_path(root, domain)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    waited = f"waited {wait:g} s; " if wait else ""
                    raise DomainBusy(
                        f"{domain} is being run by {_holder(fd)}: a second run of one domain would corrupt its "
                        f"data, dvc.lock and model versions, so this one stops ({waited}retry when it ends, or let "
                        f"it wait: `stillhouse run/stage --wait SECONDS`, flow parameter `lock_wait`)"
                    ) from None
                time.sleep(min(POLL_SECONDS, left))
        info = {"what": holder, "pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield info
        finally:
            os.ftruncate(fd, 0)  # unlocked (or the process gone) means free, whatever the file says
    finally:
        os.close(fd)  # closing the descriptor releases the flock
