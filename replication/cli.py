"""`python -m replication`: run one spec, sweep an experiment of params.yaml, or summarise the store."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from replication.data import DataError
from replication.executor import executor_config
from replication.params import experiment, load_params
from replication.spec import PROFILES, ConfigError
from replication.validation import choice
from replication.store import MergeConflict, UnreadableWeights


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one line `error: ...` (exit 2) every other bad input gets."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m replication", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--results", default="results", help="store root (default: results/)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train one run of an experiment (its base spec, with --set overrides) and print its row of the run table")
    run.add_argument("experiment", help="experiment name in params.yaml, e.g. quickstart")
    run.add_argument("--profile", help="smoke | cpu | gpu | paper (default: params.yaml's profile, whose store is committed: use smoke to try things)")
    run.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override spec keys, e.g. optimizer.lr=1e-3 batch_size=4")

    sweep = sub.add_parser("sweep", help="train every run an experiment's notebook reads (grid and follow-ups) that the store lacks; print the table")
    sweep.add_argument("experiment")
    sweep.add_argument("--profile", help="smoke | cpu | gpu | paper (default: params.yaml's profile)")
    sweep.add_argument("--max-members", type=_positive, default=None, help="largest ensemble trained as one computation")
    sweep.add_argument("--workers", type=_positive, default=None, help="worker processes (default: what metrics/bench.json measured faster)")
    sweep.add_argument("--checkpoint-every-tokens", type=_positive, default=None, help="checkpoint long runs at this interval so a killed sweep resumes mid-run")
    sweep.add_argument("--max-minutes", default=None,
                       help="start no training after this many minutes; runs in flight finish and are stored (exit 3 while runs are left)")

    store = sub.add_parser("store", help="operate on result stores")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    merge = store_sub.add_parser("merge", help="copy the records of store SOURCE that store TARGET lacks (a run with different results in both is an error, and nothing is merged)")
    merge.add_argument("source", help="a store root, e.g. another machine's results/")
    merge.add_argument("target", help="the store root to merge into, e.g. results/")
    prune = store_sub.add_parser("prune", help="list (--delete: delete) the records no declared run of an experiment names, "
                                               "left by a grid or design that has since changed")
    prune.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="default: every experiment with runs stored")
    prune.add_argument("--profile", help="smoke | cpu | gpu | paper (default: params.yaml's profile)")
    prune.add_argument("--delete", action="store_true", help="delete them (without it, only list them)")

    new = sub.add_parser("new", help="write the files of a new experiment <paper>_<topic>: topic module, notebook, params block, stage, test, ledger stub")
    new.add_argument("name", help="<paper>_<topic>, e.g. marek_warmup")

    pipeline = sub.add_parser("pipeline", help="rewrite dvc.yaml's code deps from what each stage imports (--check: only report drift)")
    pipeline.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml's code deps differ from the imports; write nothing")
    pipeline.add_argument("--dvc-yaml", default="dvc.yaml")

    show = sub.add_parser("show", help="summarise the store: runs per experiment and status")
    show.add_argument("--profile", help="one profile's store only (default: every profile with runs stored)")

    tokens = sub.add_parser("tokens", help="tokenize every corpus a profile's experiments read (cached, memory-mapped) and write the manifest")
    tokens.add_argument("--profile")
    tokens.add_argument("--out", default=None, help="manifest path (default: metrics/tokens/<profile>.json)")

    cost = sub.add_parser("cost", help="estimate each stage's GPU time on a profile from the measured GPU benchmark")
    cost.add_argument("--profile", help="gpu | paper | ... (default: params.yaml's profile)")
    cost.add_argument("--bench", default="metrics/bench_gpu.json", help="the GPU benchmark to price with")
    cost.add_argument("--hours", action="store_true", help="GPU-hours instead of GPU-minutes")

    advise = sub.add_parser("advise", help="what batch size, peak LR and beta2 each published hyperparameter law recommends "
                                           "for N parameters trained on D tokens, with the range each was fitted on")
    advise.add_argument("--params", dest="model_params", required=True, metavar="N",
                        help="model parameters, e.g. 124M, 1.3B, 7e9 (most laws count non-embedding parameters: docs/laws.md)")
    advise.add_argument("--tokens", required=True, metavar="D", help="training tokens, e.g. 2.5B, 1T (k = 1000)")
    advise.add_argument("--seq-len", default="1024", help="tokens per sequence, a whole number (default 1024)")
    advise.add_argument("--optimizer", default="adamw", help="adamw (default), sgd, adafactor or muon: laws fitted for another are flagged")
    advise.add_argument("--flops-per-token", default=None, help="training FLOPs per token for compute laws (default 6 N)")
    advise.add_argument("--batch-size", default=None, help="your batch size in sequences (of --seq-len): used by laws that give "
                                                           "only an LR, and the size the rules of thumb transfer your LR to")
    advise.add_argument("--lr", default=None, help="your peak LR, for laws that give only a batch size")
    advise.add_argument("--reference-batch-size", default=None, help="a batch size (sequences) you tuned at, for the rules of thumb")
    advise.add_argument("--reference-lr", default=None, help="the LR you tuned there")
    advise.add_argument("--beta2-half-life", default=None, help="Adam's beta2 half-life in tokens (default 7.1M: beta2 0.95 at 512 x 1024)")
    advise.add_argument("--law", action="append", default=None, help="only this law (repeatable); ids in replication/papers/laws/laws.yaml")
    advise.add_argument("--json", action="store_true", help="print JSON instead of a table")
    advise.add_argument("--plot", default=None, metavar="PNG", help="also draw each law's batch size and LR against the token "
                                                                  "budget (two decades each side of --tokens), its data beside it as CSV")
    return p


def _positive(text: str) -> int:
    """An argument that counts something: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _overrides(items: list[str]) -> dict:
    """`--set KEY=VALUE ...` as a dict; a VALUE that starts like JSON (a list, mapping or quoted string) or is
    true / false / null is parsed as JSON."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.lr=1e-3")
        if (value[:1] and value[:1] in "[{\"") or value in ("true", "false", "null"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise ConfigError(f"--set {item!r}: {value!r} is not valid JSON ({err.msg})") from None
        out[key] = value
    return out


def _profile(args, params) -> str:
    return args.profile or params.get("profile", "cpu")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, DataError, FileNotFoundError, MergeConflict, UnreadableWeights) as err:  # bad input, found before any training or merge
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")  # so that flushing at exit does not fail again
        return 0


def _dispatch(args) -> int:
    from replication import experiments
    from replication.deadline import deadline_in, minutes, stage_deadline
    from replication.store import Store, merge

    if args.command == "store" and args.store_command == "merge":
        counts = merge(args.source, args.target)
        print(f"merged {args.source} into {args.target}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
        return 0
    if args.command == "new":
        from replication.scaffold import new_experiment

        written = new_experiment(args.name, Path(args.params).parent)
        print(f"wrote {args.name}:\n  " + "\n  ".join(str(p) for p in written)
              + f"\nnext: python -m replication sweep {args.name} --profile smoke; then open notebooks/{args.name}.ipynb "
              "(docs/adding-an-experiment.md)")
        return 0
    if args.command == "pipeline":
        from replication import pipeline

        changed = pipeline.check(Path(args.dvc_yaml)) if args.check else pipeline.write(Path(args.dvc_yaml))
        verb = "drifted from their imports" if args.check else "rewritten"
        print(f"{args.dvc_yaml}: code deps {verb} in {', '.join(changed)}" if changed else f"{args.dvc_yaml}: code deps up to date")
        return 1 if changed and args.check else 0
    if args.command == "advise":
        from replication.papers.laws.advise import plot, report, request_from

        request = request_from(args)
        drawn = plot(request, args.plot, args.law) if args.plot else None  # a bad --plot fails before anything is printed
        print(report(request, args.law, as_json=args.json))
        if drawn:
            print(f"wrote {drawn} and its .csv", file=sys.stderr if args.json else sys.stdout)
        return 0
    if args.command == "show":
        root = Path(args.results)
        if args.profile:
            choice("--profile", args.profile, PROFILES)
        profiles = [args.profile] if args.profile else sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        for prof in profiles:
            if not (root / prof).is_dir():
                print(f"{prof}: no runs stored yet ({root / prof} does not exist)")
                continue
            for exp_dir in sorted(p for p in (root / prof).iterdir() if p.is_dir()):
                records = Store(root, prof, exp_dir.name).records()
                counts = {}
                for r in records:
                    counts[r["status"]] = counts.get(r["status"], 0) + 1
                print(f"{prof}/{exp_dir.name}: {len(records)} runs " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        return 0

    params = load_params(args.params)
    profile = _profile(args, params)
    if args.command == "store":  # prune
        return _prune(args, params, profile)
    if args.command == "tokens":
        from replication.tokens import write_manifest

        out = write_manifest(params, profile, args.out or f"metrics/tokens/{profile}.json")
        print(f"wrote {out}: {len(json.loads(out.read_text())['corpora'])} corpora tokenized for profile {profile}")
        return 0
    if args.command == "cost":
        from replication.cost import format_costs, stage_costs

        rows = stage_costs(params, profile, args.bench, args.results)
        print(f"profile {profile}, priced on {rows[0]['gpu'] if rows else 'the benchmarked GPU'} (eager steps; see replication/cost.py)")
        print(format_costs(rows, hours=args.hours))
        return 0
    if args.command == "sweep":  # every run the experiment's notebook reads, follow-ups included
        limit = None if args.max_minutes is None else minutes(args.max_minutes, "--max-minutes")
        df = experiments.sweep(args.experiment, params, profile, args.results, max_members=args.max_members,
                               workers=args.workers, checkpoint_every_tokens=args.checkpoint_every_tokens,
                               deadline=deadline_in(limit))
        bounded = args.max_minutes is not None or stage_deadline() is not None  # --max-minutes or REPLICATION_MAX_MINUTES
        left = experiments.missing_runs(args.experiment, params, profile, args.results) if bounded else 0
        status = _report(df, empty="no run of its own finished before the time limit" if left else None)
        if left:
            print(f"stopped at the time limit with {left} run(s) left; the same command continues "
                  "(finished runs are stored)", file=sys.stderr)
            return status or 3  # a run that failed (1) says more than one left to do
        return status
    exp = experiment(params, args.experiment, profile)
    overrides = _overrides(args.set)
    base = experiments.finetuning(exp, args.results)[1].base if "pretrain" in exp.settings else exp.base  # fine-tuning starts from the pretrained weights
    spec = base.replace(**overrides) if overrides else base
    records = experiments.train_runs(exp, [spec], args.results, executor=executor_config(params))
    return _report(experiments.table(records, grid_keys=experiments.table_keys(exp)))


def _prune(args, params: dict, profile: str) -> int:
    """`store prune`: per experiment, the records none of its declared runs names; deleted with --delete."""
    from replication import experiments, prune

    choice("--profile", profile, PROFILES)
    names = args.experiments or [n for n in params.get("experiments", {})
                                 if experiments.stored(experiment(params, n, profile), args.results).ids()]
    for name in names:
        choice("experiment", name, params.get("experiments", {}))
    total = 0
    for name in names:
        ids = (prune.prune if args.delete else prune.stale_ids)(name, params, profile, args.results)
        total += len(ids)
        if ids:
            print(f"{profile}/{name}: {len(ids)} record(s) no declared run names" + (", deleted" if args.delete else ""))
    verb = "deleted" if args.delete else "found (--delete deletes them)"
    print(f"{total} stale record(s) {verb}" if total else f"no stale records in {', '.join(names) or 'the store'}")
    return 0


def _report(df, empty: str | None = None) -> int:
    """Print the table (or `empty` when it has no rows); 1 when some run failed (its error printed below the
    table), else 0."""
    failed = df[df["status"] == "failed"] if len(df) else df
    shown = df.drop(columns=["error"], errors="ignore")
    print(shown.to_string(index=False) if len(shown) else empty or "no runs of its own (it reads other experiments' runs)")
    for _, row in failed.iterrows():
        print(f"run {row['id']} failed: {row['error']}", file=sys.stderr)
    if len(failed):
        print(f"error: {len(failed)} of {len(df)} runs failed; the next sweep retries them", file=sys.stderr)
        return 1
    return 0
