"""Promote step: a registered version becomes ``@champion`` only through the metric gates.

Aliases only (``@champion``, ``@previous``, ``@challenger``), never the deprecated stages. The
numbers are the version tags ``register`` wrote (``metric.<name>``, its CI and protocol), so a
decision needs no file from the machine that trained the model.

Every decision (accepted, refused, rollback) is recorded twice in the registry: as tags of the
candidate version (``promotion.*``) and as one entry of the model's promotion log, a registered-
model tag ``promotion_log.<seq>`` per decision (JSON: who, when, the numbers, champion before and
after).

Concurrency: two promotions of one model must not interleave (both would read the same champion
and the second would silently overwrite the first). The MLflow API has no transactions, but
creating a registered model is atomic (a unique key in the backend database): whoever creates
``<model>.promotion-lock`` holds the lock, deletes it when done, and re-reads it before writing.
Everything a decision depends on (the champion, the log's next sequence number) is read inside the
lock. A lock older than ``promote.lock_timeout_s`` belongs to a crashed process and is broken.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cyclegan import tracking
from cyclegan.config import Config, GateConfig
from cyclegan.register import CHALLENGER

CHAMPION, PREVIOUS = "champion", "previous"
LOG_PREFIX = "promotion_log."
LOCK_SUFFIX = ".promotion-lock"


class PromotionError(RuntimeError):
    """Promotion cannot be decided (unknown model, no candidate, deleted champion...)."""


@dataclass(frozen=True)
class GateRow:
    """One gate's numbers and verdict."""

    metric: str
    direction: str
    candidate: float | None
    candidate_ci: tuple[float, float] | None
    champion: float | None
    min_margin: float | None
    threshold: float | None
    ci_must_clear: bool
    passed: bool
    reason: str


@dataclass(frozen=True)
class PromotionResult:
    model: str
    candidate: str | None  # version judged (rollback: the version restored)
    champion_before: str | None
    champion_after: str | None
    accepted: bool
    dry_run: bool = False
    action: str = "promote"  # promote | rollback
    rows: list[GateRow] = field(default_factory=list)
    seq: int | None = None  # index in the promotion log (None: not recorded)
    at: str = ""
    by: str = ""
    note: str = ""

    def table(self) -> str:
        lines = [
            "| metric | better | candidate [CI] | champion | margin | threshold | result |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            ci = f" [{r.candidate_ci[0]:.4g}, {r.candidate_ci[1]:.4g}]" if r.candidate_ci else ""
            cand = "missing" if r.candidate is None else f"{r.candidate:.4g}{ci}"
            champ = "-" if r.champion is None else f"{r.champion:.4g}"
            margin = "-" if r.min_margin is None else f"{r.min_margin:+g}"
            margin += " (CI must clear)" if r.ci_must_clear else ""
            thr = "-" if r.threshold is None else f"{r.threshold:g}"
            verdict = "pass" if r.passed else f"FAIL: {r.reason}"
            lines.append(
                f"| {r.metric} | {r.direction} | {cand} | {champ} | {margin} | {thr} | {verdict} |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        if self.action == "rollback":
            head = (
                f"{self.model}: rolled back @champion from version {self.champion_before} "
                f"to {self.champion_after or 'none'}"
            )
        else:
            verdict = "ACCEPTED" if self.accepted else "REFUSED"
            against = (
                f"@champion version {self.champion_before}"
                if self.champion_before
                else "absolute thresholds (no @champion yet)"
            )
            head = f"{self.model}: version {self.candidate} {verdict} against {against}"
            if self.dry_run:
                head += " [dry run: nothing changed]"
            elif self.accepted:
                head += f"; @champion -> {self.candidate}"
                if self.champion_before:
                    head += f", @previous -> {self.champion_before}"
        lines = [head]
        if self.note:
            lines.append(self.note)
        if self.rows:
            lines.append(self.table())
        if self.seq is not None and "not recorded" not in self.note:
            lines.append(f"recorded as promotion_log.{self.seq:06d} ({self.by}, {self.at})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- registry reads -------------------------------------------------------------------------


def _client(cfg: Config) -> Any:
    import mlflow

    tracking.setup(cfg.tracking)
    return mlflow.MlflowClient()


def _not_found(e: Exception) -> bool:
    return getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def get_model(client: Any, name: str) -> Any:
    """The registered model, or a clear error naming the ones that exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if not _not_found(e):
            raise
    names = sorted(
        m.name for m in client.search_registered_models() if not m.name.endswith(LOCK_SUFFIX)
    )
    raise PromotionError(
        f"registered model {name!r} not found in {tracking_uri()} "
        f"(registered: {', '.join(names) or 'none'}); check --model or tracking.registered_model"
    )


def tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def version_or_none(client: Any, name: str, version: str | None) -> Any:
    """The live model version, or None when absent or deleted."""
    from mlflow.exceptions import MlflowException

    if version is None:
        return None
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if _not_found(e):
            return None
        raise


def alias_version(client: Any, name: str, alias: str) -> Any:
    """The version ``@alias`` points to, or None (MLflow raises a bare INVALID_PARAMETER)."""
    version = client.get_registered_model(name).aliases.get(alias)
    return version_or_none(client, name, version)


def read_log(model: Any) -> list[dict[str, Any]]:
    """The promotion log of a registered model, oldest first."""
    keys = sorted(k for k in model.tags if k.startswith(LOG_PREFIX))
    return [json.loads(model.tags[k]) for k in keys]


def recorded_champion(log: list[dict[str, Any]]) -> str | None:
    """The champion the last recorded decision left behind."""
    for entry in reversed(log):
        if entry.get("accepted"):
            return entry.get("champion_after")
    return None


def champion_now(client: Any, name: str, log: list[dict[str, Any]]) -> Any:
    """``@champion``'s version; a clear error when the log's champion was deleted since."""
    champ = alias_version(client, name, CHAMPION)
    if champ is not None:
        return champ
    lost = recorded_champion(log)
    if lost is None or version_or_none(client, name, lost) is not None:
        return None
    prev = alias_version(client, name, PREVIOUS)
    fix = (
        f"restores @previous (version {prev.version})"
        if prev is not None
        else "records that there is no champion; the next promotion is judged on thresholds"
    )
    raise PromotionError(
        f"model {name!r}: its @champion, version {lost}, was deleted from the registry; run "
        f"`cyclegan rollback --model {name}` first (it {fix})"
    )


# --- gates ----------------------------------------------------------------------------------


def _num(tags: dict[str, str], key: str) -> float | None:
    try:
        value = float(tags[key])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None


def judge(gate: GateConfig, cand: dict[str, str], champ: dict[str, str] | None) -> GateRow:
    """One gate: the absolute threshold always; margin and CI against the champion if any."""
    key = f"metric.{gate.metric}"
    c, lo, hi = _num(cand, key), _num(cand, f"{key}.ci_low"), _num(cand, f"{key}.ci_high")
    p = _num(champ, key) if champ is not None else None
    better = 1.0 if gate.direction == "higher" else -1.0
    reasons = []
    if c is None:
        reasons.append("candidate has no value (re-register after `cyclegan evaluate`)")
    elif gate.threshold is not None and better * (c - gate.threshold) < 0:
        reasons.append(f"{'below' if better > 0 else 'above'} threshold {gate.threshold:g}")
    if c is not None and champ is not None and gate.min_margin is not None:
        if p is None:
            reasons.append("champion has no value")
        elif cand.get(f"{key}.protocol") != champ.get(f"{key}.protocol"):
            reasons.append("measured with a different protocol than the champion")
        else:
            if better * (c - p) < gate.min_margin:
                reasons.append(
                    f"improves on champion by {better * (c - p):+.4g} < {gate.min_margin:+g}"
                )
            if gate.ci_must_clear:
                edge = lo if better > 0 else hi
                if edge is None:
                    reasons.append("no confidence interval")
                elif better * (edge - p) <= 0:
                    reasons.append("CI does not clear the champion's mean")
    return GateRow(
        metric=gate.metric,
        direction=gate.direction,
        candidate=c,
        candidate_ci=(lo, hi) if lo is not None and hi is not None else None,
        champion=p,
        min_margin=gate.min_margin,
        threshold=gate.threshold,
        ci_must_clear=gate.ci_must_clear,
        passed=not reasons,
        reason="; ".join(reasons),
    )


# --- lock and record ------------------------------------------------------------------------


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


@contextlib.contextmanager
def promotion_lock(client: Any, name: str, timeout_s: float) -> Iterator[str]:
    """Hold ``<name>.promotion-lock`` (an atomic create); yields this holder's token."""
    from mlflow.exceptions import MlflowException

    lock, token = name + LOCK_SUFFIX, f"{_who()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(
                lock,
                tags={"owner": token, "since": repr(time.time()), "cyclegan.lock": "true"},
                description=f"promotion lock of {name!r}; held by {token}",
            )
            break
        except MlflowException as e:
            if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
        _break_if_stale(client, lock, timeout_s)
        if time.monotonic() > deadline:
            raise PromotionError(
                f"model {name!r}: another promotion holds {lock!r}; waited "
                f"promote.lock_timeout_s={timeout_s:g}s. Try again"
            )
        time.sleep(0.1 + random.random() * 0.2)
    try:
        yield token
    finally:
        with contextlib.suppress(MlflowException):
            if _lock_owner(client, lock) == token:
                client.delete_registered_model(lock)


def _lock_owner(client: Any, lock: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(lock).tags.get("owner")
    except MlflowException as e:
        if _not_found(e):
            return None
        raise


def _break_if_stale(client: Any, lock: str, timeout_s: float) -> None:
    """Delete a lock its holder could not have held this long (it crashed)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(lock).tags
    except MlflowException:
        return
    since = float(tags.get("since", "0") or 0)
    if time.time() - since > timeout_s and _lock_owner(client, lock) == tags.get("owner"):
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


def _verify_lock(client: Any, name: str, token: str) -> None:
    """Re-read before writing: a holder whose lock was broken must not write."""
    if _lock_owner(client, name + LOCK_SUFFIX) != token:
        raise PromotionError(
            f"model {name!r}: lost the promotion lock (held longer than promote.lock_timeout_s); "
            "nothing was changed, try again"
        )


def record(client: Any, result: PromotionResult) -> PromotionResult:
    """Append ``result`` to the model's promotion log and tag the candidate version."""
    model = client.get_registered_model(result.model)
    seq = len(read_log(model)) + 1
    done = replace(result, seq=seq)
    entry = done.to_dict()
    client.set_registered_model_tag(result.model, f"{LOG_PREFIX}{seq:06d}", json.dumps(entry))
    if result.candidate is not None:
        tags = {
            "promotion.decision": ("accepted" if result.accepted else "refused")
            if result.action == "promote"
            else "rollback",
            "promotion.seq": str(seq),
            "promotion.at": result.at,
            "promotion.by": result.by,
            "promotion.champion_before": str(result.champion_before),
            "promotion.table": json.dumps([asdict(r) for r in result.rows]),
        }
        for k, v in tags.items():
            client.set_model_version_tag(result.model, result.candidate, k, v)
    return done


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --- steps ----------------------------------------------------------------------------------


def _candidate(client: Any, name: str, version: str | None) -> Any:
    if version is not None:
        mv = version_or_none(client, name, version)
        if mv is None:
            raise PromotionError(f"model {name!r} has no version {version}")
        return mv
    mv = alias_version(client, name, CHALLENGER)
    if mv is None:
        raise PromotionError(
            f"model {name!r} has no @{CHALLENGER}: pass --version N or run `cyclegan register`"
        )
    return mv


def decide(cfg: Config, name: str, cand: Any, champ: Any, dry_run: bool) -> PromotionResult:
    champ_tags = dict(champ.tags) if champ is not None else None
    rows = [judge(g, dict(cand.tags), champ_tags) for g in cfg.promote.gates]
    accepted = all(r.passed for r in rows)
    before = str(champ.version) if champ is not None else None
    return PromotionResult(
        model=name,
        candidate=str(cand.version),
        champion_before=before,
        champion_after=str(cand.version) if accepted and not dry_run else before,
        accepted=accepted,
        dry_run=dry_run,
        rows=rows,
        at=_now(),
        by=_who(),
    )


def promote(
    cfg: Config, model: str | None = None, version: str | None = None, dry_run: bool = False
) -> PromotionResult:
    """Judge ``version`` (default ``@challenger``) against ``@champion`` with ``promote.gates``.

    Accepted: ``@champion`` -> candidate, old champion -> ``@previous``, ``@challenger`` removed.
    Refused: nothing moves. Both are recorded (not in a dry run).
    """
    client = _client(cfg)
    name = model or cfg.tracking.registered_model
    get_model(client, name)
    if dry_run:
        log = read_log(client.get_registered_model(name))
        champ = champion_now(client, name, log)
        return decide(cfg, name, _candidate(client, name, version), champ, True)
    with promotion_lock(client, name, cfg.promote.lock_timeout_s) as token:
        log = read_log(client.get_registered_model(name))
        champ = champion_now(client, name, log)
        cand = _candidate(client, name, version)
        if champ is not None and str(champ.version) == str(cand.version):
            return PromotionResult(
                name,
                str(cand.version),
                str(champ.version),
                str(champ.version),
                True,
                note="already @champion; nothing to decide (not recorded)",
            )
        result = decide(cfg, name, cand, champ, False)
        same = _same_refusal(log, result)
        if same is not None:
            note = f"same decision as promotion_log.{same:06d}; not recorded again"
            return replace(result, seq=same, note=note)
        _verify_lock(client, name, token)
        if result.accepted:
            client.set_registered_model_alias(name, CHAMPION, cand.version)
            if champ is not None:
                client.set_registered_model_alias(name, PREVIOUS, champ.version)
            if CHALLENGER in cand.aliases:
                client.delete_registered_model_alias(name, CHALLENGER)
        return record(client, result)


def _same_refusal(log: list[dict[str, Any]], result: PromotionResult) -> int | None:
    """The log entry that already refused this candidate with the same numbers, if any.

    Re-running the pipeline with unchanged inputs (a second ``make run``) must not add entries.
    """
    if result.accepted:
        return None
    rows = json.loads(json.dumps([asdict(r) for r in result.rows]))
    for entry in reversed(log):
        if entry.get("candidate") == result.candidate and entry.get("action") == "promote":
            same = not entry.get("accepted") and entry.get("rows") == rows
            same = same and entry.get("champion_before") == result.champion_before
            return entry.get("seq") if same else None
    return None


def rollback(cfg: Config, model: str | None = None) -> PromotionResult:
    """``@champion`` back to ``@previous`` (recorded like a promotion)."""
    client = _client(cfg)
    name = model or cfg.tracking.registered_model
    get_model(client, name)
    with promotion_lock(client, name, cfg.promote.lock_timeout_s) as token:
        log = read_log(client.get_registered_model(name))
        champ = alias_version(client, name, CHAMPION)
        before = str(champ.version) if champ is not None else recorded_champion(log)
        if before is None:
            raise PromotionError(f"model {name!r} has no @champion: nothing to roll back")
        prev = alias_version(client, name, PREVIOUS)
        if prev is None and champ is not None:
            raise PromotionError(
                f"model {name!r} has no @previous version to roll back to (champion stays "
                f"version {before})"
            )
        after = str(prev.version) if prev is not None else None
        _verify_lock(client, name, token)
        if prev is not None:
            client.set_registered_model_alias(name, CHAMPION, prev.version)
            older = _champion_before(log, after, client, name)
            if older is None:
                client.delete_registered_model_alias(name, PREVIOUS)
            else:
                client.set_registered_model_alias(name, PREVIOUS, older)
        note = "" if champ is not None else f"version {before} was deleted"
        if after is None:
            note += "; no @previous either: the model now has no champion"
        result = PromotionResult(
            name,
            after,
            before,
            after,
            True,
            action="rollback",
            at=_now(),
            by=_who(),
            note=note.strip("; "),
        )
        return record(client, result)


def _champion_before(
    log: list[dict[str, Any]], version: str | None, client: Any, name: str
) -> str | None:
    """Who was champion before ``version`` last became champion (still live), for @previous."""
    for entry in reversed(log):
        if entry.get("accepted") and entry.get("champion_after") == version:
            older = entry.get("champion_before")
            if older and older != version and version_or_none(client, name, older) is not None:
                return older
            return None
    return None
