"""`python -m replication`: run one spec, sweep an experiment of params.yaml, or summarise the store."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from replication.config import ConfigError, experiment, load_params, run_spec_from_dict
from replication.data import DataError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m replication", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--results", default="results", help="store root (default: results/)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train one run of an experiment (its base spec) and print its record summary")
    run.add_argument("experiment", help="experiment name in params.yaml, e.g. quickstart")
    run.add_argument("--profile", help="smoke | cpu | gpu (default: params.yaml's profile)")
    run.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override spec keys, e.g. optimizer.lr=1e-3 batch_size=4")

    sweep = sub.add_parser("sweep", help="run every missing run of an experiment's grid; print the table")
    sweep.add_argument("experiment")
    sweep.add_argument("--profile")
    sweep.add_argument("--max-members", type=int, default=None, help="largest ensemble trained as one computation")
    sweep.add_argument("--workers", type=int, default=None, help="worker processes (default: what metrics/bench.json measured faster)")
    sweep.add_argument("--checkpoint-every-tokens", type=int, default=None, help="checkpoint long runs at this interval so a killed sweep resumes mid-run")

    show = sub.add_parser("show", help="summarise the store: runs per experiment and status")
    show.add_argument("--profile")
    return p


def _profile(args, params) -> str:
    return args.profile or params.get("profile", "cpu")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    from replication.store import Store
    from replication.sweep import DEFAULT_MAX_MEMBERS, finetuning, run_finetuning, run_more

    if args.command == "show":
        root = Path(args.results)
        profiles = [args.profile] if args.profile else sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for prof in profiles:
            for exp_dir in sorted(p for p in (root / prof).iterdir() if p.is_dir()):
                records = Store(root, prof, exp_dir.name).records()
                counts = {}
                for r in records:
                    counts[r["status"]] = counts.get(r["status"], 0) + 1
                print(f"{prof}/{exp_dir.name}: {len(records)} runs " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        return 0

    params = load_params(args.params)
    exp = experiment(params, args.experiment, _profile(args, params))
    pretrain = None
    if "pretrain" in exp.settings:  # a fine-tuning experiment: every run starts from the pretrained weights
        pretrain, exp = finetuning(exp, args.results)
    if args.command == "run":
        overrides = {}
        for item in args.set:
            key, _, value = item.partition("=")
            overrides[key] = json.loads(value) if value[:1] in "[{\"" or value in ("true", "false", "null") else value
        specs, kwargs = [exp.base.replace(**overrides) if overrides else exp.base], {}
    else:
        specs = exp.expand()
        kwargs = dict(max_members=args.max_members or DEFAULT_MAX_MEMBERS, workers=args.workers,
                      checkpoint_every_tokens=args.checkpoint_every_tokens)
    if pretrain is not None:
        df = run_finetuning(exp, pretrain, specs, args.results, **kwargs)[1]
    else:
        df = run_more(exp, specs, results_root=args.results, **kwargs)
    print(df.to_string(index=False))
    return 0
