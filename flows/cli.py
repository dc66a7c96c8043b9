"""`stillhouse`: run the pipeline, one stage, promote a model, or ask the registered model.

    stillhouse run --domain healthcare           # Prefect flow (default) -> registered model
    stillhouse run --domain education --driver dvc
    stillhouse run --domain healthcare --shards 4 --wait 600  # 4 synthesis tasks; wait for a running one
    stillhouse stage distill --domain healthcare # one stage; what dvc.yaml calls
    stillhouse promote --domain healthcare       # champion -> challenger if its gates pass and it ties or beats
    stillhouse ask --domain healthcare "Clinical note: ..."
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from flows.locks import DomainBusy
from tasks.params import STAGES, load_params, stage_dir


def _stage(args) -> None:
    from flows.locks import domain_lock

    params = load_params(Path(args.root) / args.params)
    params.domain(args.domain)
    # `dvc repro` runs this per stage while it holds DVC's repo lock: waiting here for a flow that
    # needs that lock to finish would stall both, so the default is to stop at once (--wait 0).
    with domain_lock(args.root, args.domain, wait=args.wait, holder=f"stillhouse stage {args.name}"):
        from flows.pipeline import STAGE_MAIN, stage_log  # torch, Prefect: only once the domain is ours

        with stage_log(args.root, args.domain, args.name):
            summary = STAGE_MAIN[args.name](args.domain, params, Path(args.root))
    print(json.dumps({"stage": args.name, "domain": args.domain, **summary}, default=str))


def _run(args) -> None:
    load_params(Path(args.root) / args.params).domain(args.domain)  # fail before any work
    if args.driver == "dvc":
        if args.shards > 1:
            raise ValueError("--shards needs the prefect driver (dvc runs each stage as one command)")
        cmd = ["dvc", "repro", f"register@{args.domain}"] + (["--force"] if args.force else [])
        subprocess.run(cmd, cwd=args.root, check=True)
    else:
        from flows.pipeline import pipeline

        pipeline(domain=args.domain, params_path=args.params, root=args.root, force=args.force,
                 shards=args.shards, lock_wait=args.wait)
    _print_outcome(args.domain, Path(args.root))


def _print_outcome(domain: str, root: Path) -> None:
    reg = json.loads((stage_dir(root, domain, "register") / "registration.json").read_text())
    fairness = stage_dir(root, domain, "fairness")
    print(
        f"\nStillhouse {domain}: done.\n"
        f"  registered model : {reg['model_name']} v{reg['version']}  aliases={reg['aliases']}"
        f"  promoted={reg['promoted']}\n"
        f"  load it          : mlflow.pyfunc.load_model({reg['model_uri']!r})  "
        f"or: stillhouse ask --domain {domain} \"...\"\n"
        f"  fairness report  : {fairness / 'report.json'}  (plot: {fairness / 'fairness.png'})\n"
        f"  MLflow UI        : {reg['ui_command']}\n"
    )


def _promote(args) -> None:
    from tasks.register import promote

    result = promote(args.domain, load_params(Path(args.root) / args.params), Path(args.root), version=args.version)
    print(json.dumps(result, indent=2, default=str))


def _ask(args) -> None:
    from tasks.register import answer

    params = load_params(Path(args.root) / args.params)
    print(answer(args.domain, params, Path(args.root), args.text, alias=args.alias))


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # teachers and students load from local files
    # Prefect's telemetry heartbeat races the temporary server's SQLite ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    parser = argparse.ArgumentParser(prog="stillhouse", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--root", default=".", help="project folder holding params.yaml and dvc.yaml")
    parser.add_argument("--params", default="params.yaml")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline for a domain")
    run.add_argument("--domain", default="healthcare")
    run.add_argument("--driver", choices=("prefect", "dvc"), default="prefect")
    run.add_argument("--force", action="store_true", help="rerun stages DVC sees as unchanged")
    run.add_argument("--shards", type=int, default=1, help="synthesis as N concurrent Prefect tasks (prefect driver)")
    run.add_argument("--wait", type=float, default=0.0,
                     help="seconds to wait while another run holds this domain (default: fail at once)")
    run.set_defaults(func=_run)

    stage = sub.add_parser("stage", help="run one stage")
    stage.add_argument("name", choices=STAGES)
    stage.add_argument("--domain", default="healthcare")
    stage.add_argument("--wait", type=float, default=0.0,
                       help="seconds to wait while another run holds this domain (default: fail at once)")
    stage.set_defaults(func=_stage)

    promote = sub.add_parser("promote", help="move alias `champion` to a version whose gates passed and whose "
                                         "accuracy ties or beats the champion's (register.promote_tolerance)")
    promote.add_argument("--domain", default="healthcare")
    promote.add_argument("--version", default=None, help="model version (default: the challenger)")
    promote.set_defaults(func=_promote)

    ask = sub.add_parser("ask", help="answer a question with the registered model")
    ask.add_argument("text")
    ask.add_argument("--domain", default="healthcare")
    ask.add_argument("--alias", default="challenger")
    ask.set_defaults(func=_ask)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, DomainBusy) as err:  # config, input, busy domain: one clear line
        sys.exit(f"stillhouse: {err}")


if __name__ == "__main__":
    main()
