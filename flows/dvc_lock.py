"""Keep DVC the one owner of stage outputs when stages run under Prefect.

A Prefect task runs a stage in-process, then `record()` writes the stage into `dvc.lock`
exactly as `dvc repro` would (deps, params and outs hashed, outs cached and git-ignored), so
`dvc status` is clean after a Prefect run and `dvc repro` has nothing to do. `is_current()`
lets the flow skip stages whose deps, params and outs are unchanged, as `dvc repro` does.
Both wait for DVC's repo lock (`.dvc/tmp/lock`) instead of failing after DVC's 3 s: flows of
other domains record at the same time, and a `dvc repro` holds it for its whole run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from dvc.repo import Repo


def stage_name(stage: str, domain: str) -> str:
    """The `foreach` stage name in dvc.yaml, e.g. `distill@healthcare`."""
    return f"{stage}@{domain}"


def is_current(root: str | Path, name: str) -> bool:
    """True when dvc.lock already records this stage with its current deps, params and outs."""
    # DVC resolves dvc.yaml paths against the working directory: work from the project root.
    with contextlib.chdir(root), Repo(".", _wait_for_lock=True) as repo:
        return not repo.status(targets=[name])


def record(root: str | Path, name: str) -> None:
    """Hash the stage's deps/params/outs into dvc.lock and cache its outs (like `dvc commit -f`)."""
    with contextlib.chdir(root), Repo(".", _wait_for_lock=True) as repo:  # as `dvc --wait-for-lock`
        with repo.scm_context(autostage=True, quiet=True):
            (stage,) = repo.stage.collect(name)
            repo.commit(name, force=True)
            for out in stage.outs:
                if out.use_cache:
                    out.ignore()  # what `dvc repro` does: keep cached outputs out of git
