"""The claims ledger: every quantitative claim of the four papers that the workbook tests or means to test.

One version-controlled file per paper, beside its paper module (`replication/papers/<paper>/ledger.yaml`).
Each claim names the paper's section or figure, its statement and number, the experiment whose metrics
file carries our measurement (under `claims`, by the claim's id), the verdict rule with its parameters
(`replication.verdicts`), the scale it needs, and the figure that shows it. Notebooks decide claims with
the rule named here (`replication.claims.claim`); the report re-applies it to the stored measurements.

A claim whose metrics file does not exist yet (its experiment has not landed) is "not run yet"; a metrics
file that exists but lacks the claim is an error naming both, never a silent skip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from replication.verdicts import NOT_RUN, Decision, RuleError, check_requires, check_rule, decide

PAPERS_DIR = Path(__file__).resolve().parent / "papers"
PAPER_ORDER = ("marek", "zhang", "power", "smoltulu")  # the report's order: the README's mission list

_PAPER_KEYS = {"paper", "title", "arxiv", "spec", "scale", "references", "claims"}
_CLAIM_KEYS = {"id", "kind", "source", "statement", "paper_value", "experiment", "metrics", "figure", "rule", "params", "requires",
               "literature", "scale"}
_REQUIRED = _CLAIM_KEYS - {"params", "requires", "literature"}
KINDS = ("finding", "check")  # a finding could have failed; a check is guaranteed by the design (identities, accounting)


class LedgerError(ValueError):
    """A ledger file, or the metrics it points at, that cannot be read as the ledger promises."""


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    source: str
    statement: str
    paper_value: str
    experiment: str
    metrics: str
    figure: str
    rule: str
    scale: str
    kind: str = "finding"
    params: dict = field(default_factory=dict)
    requires: tuple = ()  # regime conditions: {value, at_most | at_least, says}, read from the measurement's `regime`
    literature: str = ""  # other published work our result agrees or disagrees with

    @property
    def is_check(self) -> bool:
        return self.kind == "check"

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.experiment}.ipynb"


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    arxiv: str
    spec: str
    scale: dict  # experiment -> the paper's setting (model, tokens, batch sizes, seeds)
    references: dict  # name -> the paper's numbers for a side-by-side figure
    claims: tuple[Claim, ...]


def _read(path: Path) -> Paper:
    where = path.relative_to(PAPERS_DIR.parent.parent)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise LedgerError(f"{where}: not valid YAML: {err}") from None
    unknown = set(raw) - _PAPER_KEYS
    if unknown:
        raise LedgerError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a paper has: {', '.join(sorted(_PAPER_KEYS))}")
    key = raw.get("paper")
    if key != path.parent.name:
        raise LedgerError(f"{where}: `paper: {key}` must name its folder, {path.parent.name!r}")
    claims = []
    for i, entry in enumerate(raw.get("claims") or []):
        name = entry.get("id", f"claims[{i}]")
        unknown, missing = set(entry) - _CLAIM_KEYS, _REQUIRED - set(entry)
        if unknown or missing:
            raise LedgerError(f"{where}: claim {name}: " + "; ".join(
                s for s in (unknown and f"unknown key(s) {', '.join(sorted(unknown))}", missing and f"missing {', '.join(sorted(missing))}") if s))
        if not name.startswith(f"{key}."):
            raise LedgerError(f"{where}: claim id {name!r} must start with {key!r}.")
        if not entry["experiment"].startswith(f"{key}_"):
            raise LedgerError(f"{where}: claim {name}: experiment {entry['experiment']!r} must be named {key}_<topic>")
        if entry["kind"] not in KINDS:
            raise LedgerError(f"{where}: claim {name}: kind {entry['kind']!r} must be one of {', '.join(KINDS)}")
        try:
            check_rule(entry["rule"], entry.get("params") or {})
            check_requires(entry.get("requires") or [])
        except RuleError as err:
            raise LedgerError(f"{where}: claim {name}: {err}") from None
        claims.append(Claim(paper=key, params=entry.get("params") or {}, requires=tuple(entry.get("requires") or ()),
                            **{k: str(v).strip() for k, v in entry.items() if k not in ("params", "requires")}))
    return Paper(key=key, title=raw["title"], arxiv=str(raw["arxiv"]), spec=raw["spec"], scale=raw.get("scale") or {},
                 references=raw.get("references") or {}, claims=tuple(claims))


@lru_cache(maxsize=None)
def papers() -> dict[str, Paper]:
    """Every paper's ledger, in the report's order; ids are unique across papers."""
    found = {p.parent.name: _read(p) for p in sorted(PAPERS_DIR.glob("*/ledger.yaml"))}
    ordered = {k: found[k] for k in PAPER_ORDER if k in found} | found
    seen: dict[str, str] = {}
    for paper in ordered.values():
        for c in paper.claims:
            if c.id in seen:
                raise LedgerError(f"claim id {c.id!r} appears twice (in {seen[c.id]} and {paper.key})")
            seen[c.id] = paper.key
    return ordered


def claims() -> dict[str, Claim]:
    return {c.id: c for paper in papers().values() for c in paper.claims}


def entry(claim_id: str) -> Claim:
    try:
        return claims()[claim_id]
    except KeyError:
        raise LedgerError(f"claim {claim_id!r} is not in any ledger (replication/papers/*/ledger.yaml)") from None


def stored_claim(claim: Claim, root: str | Path = ".") -> dict | None:
    """The claim as its notebook stored it in its metrics file; None when that file does not exist yet."""
    path = Path(root) / claim.metrics
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LedgerError(f"{claim.metrics}: not valid JSON ({err}); re-run stage {claim.experiment}") from None
    found = [c for c in stored.get("claims", []) if c.get("id") == claim.id]
    if not found or "measurement" not in found[0]:
        raise LedgerError(f"claim {claim.id}: {claim.metrics} has no measurement under claims[{claim.id}] "
                          f"(key `claims[id={claim.id}].measurement`); re-run stage {claim.experiment}, or fix the id")
    return found[0]


def evaluate(claim: Claim, root: str | Path = ".") -> tuple[Decision, dict | None]:
    """The claim's verdict from its stored measurement under the ledger's rule ("not run yet" without one)."""
    stored = stored_claim(claim, root)
    if stored is None:
        return Decision(NOT_RUN, f"{claim.metrics} does not exist: stage {claim.experiment} has not run"), None
    try:
        return decide(claim.rule, claim.params, stored["measurement"], claim.requires), stored
    except RuleError as err:
        raise LedgerError(f"claim {claim.id} ({claim.metrics}): {err}") from None
