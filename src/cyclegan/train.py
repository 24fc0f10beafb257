"""The train step: ``train(cfg) -> TrainResult``, called by the CLI, DVC and tests alike.

Runs single-process or under torchrun (see ``training.distributed``). Rank 0 alone logs,
checkpoints and talks to MLflow. Resumes automatically from the newest intact checkpoint of
the same training config, restoring every RNG, so a killed run continues bit-identically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cyclegan import tracking
from cyclegan.config import Config, config_from_dict, flatten
from cyclegan.data.trainset import TrainData, check_train_data
from cyclegan.tracking_buffer import RunLogger, open_run
from cyclegan.training import checkpoint as ckpt
from cyclegan.training import distributed, precision, report
from cyclegan.training.distributed import DistInfo
from cyclegan.training.loader import domain_loader, fixed_samples, progressive_stages
from cyclegan.training.monitor import CollapseMonitor, progress_bar, sample_grid, show_progress
from cyclegan.training.step import CycleGAN, NonFiniteLossError

log = logging.getLogger("cyclegan.train")

# Keys that may change between a checkpoint and a resumed run (how long and how it is watched).
RESUMABLE_KEYS = (
    "train.steps",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.keep_last",
    "train.eval_every",
    "train.num_workers",
    "train.resume",
    "train.nodes",  # world-size independent by design (stream samplers): resume on N nodes
    "tracking.",
    "evaluate.",
    "export.",
)

Evaluator = Callable[[torch.nn.Module, torch.nn.Module], dict[str, float]]


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    global_batch: int
    last_checkpoint: Path
    best_checkpoint: Path | None
    final_losses: dict[str, float]
    images_per_s: float
    resumed_from: int = 0
    best_score: float | None = None
    mlflow_run_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    nothing_trained: str | None = None  # why, when the run was already at or past its target

    def summary(self) -> str:
        if self.nothing_trained:
            return "\n".join(
                [self.nothing_trained, f"last checkpoint: {self.last_checkpoint} (unchanged)"]
                + [f"warning: {w}" for w in self.warnings]
            )
        losses = " ".join(f"{k}={v:.3f}" for k, v in sorted(self.final_losses.items()))
        lines = [
            f"trained {self.steps} steps (global batch {self.global_batch}"
            + (f", resumed from step {self.resumed_from}" if self.resumed_from else "")
            + f") at {self.images_per_s:.1f} images/s",
            f"final losses: {losses}",
            f"last checkpoint: {self.last_checkpoint}",
            f"best checkpoint: {self.best_checkpoint} (score {self.best_score})",
        ]
        if self.mlflow_run_id:
            lines.append(f"MLflow run: {self.mlflow_run_id}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _training_identity(cfg: Config) -> dict[str, Any]:
    flat = flatten(cfg.to_dict())
    return {k: v for k, v in flat.items() if not k.startswith(RESUMABLE_KEYS)}


def rng_state() -> dict[str, Any]:
    """Every global RNG as checkpoint-safe types (``weights_only=True`` loadable)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _aside_dir(ckpt_dir: Path, name: str) -> Path:
    """A new folder for checkpoints moved aside: ``name``, else ``name-1``...; an existing one
    may hold an earlier move's files of the same names, which a rename would overwrite."""
    return next(
        d for n in range(10_000) if not (d := ckpt_dir / (f"{name}-{n}" if n else name)).exists()
    )


def _try_resume(
    cfg: Config, model: CycleGAN, info: DistInfo, ckpt_dir: Path
) -> tuple[int, dict[str, Any], Path | None]:
    """Load the newest intact checkpoint of the same training config; (step, metrics, file).

    Checkpoints of a different training config, or any when ``train.resume`` is false, are moved
    aside (never deleted) by rank 0: left in place, rotation would keep the old run's higher step
    numbers and delete the new run's checkpoints, and a later resume would pick up the old run.
    """
    path = ckpt.latest_checkpoint(ckpt_dir) if cfg.train.resume else None
    state = ckpt.load_checkpoint(path, map_location=info.device) if path else None
    stale = None
    if not cfg.train.resume and any(ckpt_dir.glob("*.pt")):
        stale = _aside_dir(ckpt_dir, time.strftime("not-resumed-%Y%m%dT%H%M%SZ", time.gmtime()))
        log.warning(
            "train.resume is false: moving the checkpoints already in %s to %s and starting "
            "from step 0",
            ckpt_dir,
            stale,
        )
    if state is not None:
        old_cfg = config_from_dict(state["config"])
        old, new = _training_identity(old_cfg), _training_identity(cfg)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            stale = _aside_dir(ckpt_dir, f"stale-{old_cfg.hash()}")
            log.warning(
                "checkpoints in %s were made with a different config (%s); moving them "
                "to %s and starting from step 0",
                ckpt_dir,
                ", ".join(diff[:8]),
                stale,
            )
    distributed.barrier(info)  # every rank has read before rank 0 moves anything
    if stale is not None:
        if info.is_main:
            stale.mkdir()
            for p in ckpt_dir.glob("*.pt"):
                p.rename(stale / p.name)
        distributed.barrier(info)
        return 0, {}, None
    if state is None:
        return 0, {}, None
    model.load_state_dict(state)
    own = state
    ranks = state.get("ranks")
    if info.distributed and ranks and len(ranks) == info.world_size:
        own = ranks[info.rank]
        model.load_rank_state(own)
    elif info.distributed:
        log.warning(
            "checkpoint %s was written by %s process(es), this run has %d: every rank "
            "starts from rank 0's history pools and RNG state",
            path,
            len(ranks) if ranks else 1,
            info.world_size,
        )
    set_rng_state(own["rng"])
    log.info("resumed from %s (step %d)", path, state["step"])
    return int(state["step"]), dict(state.get("metrics", {})), path


def _save(
    cfg: Config, model: CycleGAN, info: DistInfo, ckpt_dir: Path, step: int, metrics: dict
) -> Path:
    """Rank 0 writes the checkpoint; in DDP it also holds every rank's pools and RNG states."""
    path = ckpt_dir / f"step_{step:08d}.pt"
    ranks = distributed.gather_to_main(info, {**model.rank_state(), "rng": rng_state()})
    if not info.is_main:
        return path
    state = {
        "config": cfg.to_dict(),
        "step": step,
        **model.state_dict(),
        "rng": rng_state(),
        "metrics": metrics,
        "versions": tracking.library_versions(),
    }
    if info.distributed:
        state["ranks"] = ranks
    ckpt.save_checkpoint(path, state)
    ckpt.link_as(path, ckpt_dir / "last.pt")
    ckpt.rotate_checkpoints(ckpt_dir, cfg.train.keep_last)
    return path


def _log_params(cfg: Config, info: DistInfo, model: CycleGAN, run: RunLogger) -> None:
    params = {k: str(v)[:500] for k, v in flatten(cfg.to_dict()).items()}
    params.update(
        {
            "git_commit": tracking.git_commit(),
            "data_hash": tracking.dvc_data_hash(cfg.data.processed_dir),
            "device": str(info.device),
            "world_size": info.world_size,
            "global_batch": cfg.train.batch_size * info.world_size,
            **{f"version.{k}": v for k, v in tracking.library_versions().items()},
            "precision.amp": model.amp,
            "precision.channels_last": str(model.memory_format == torch.channels_last),
        }
    )
    if model.precision is not None:  # what `auto` measured on this machine
        params.update(precision.mlflow_params(model.precision))
    existing = run.client.get_run(run.run_id).data.params
    run.params({k: v for k, v in params.items() if k not in existing})


def _setup_threads(cfg: Config) -> None:
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)


def default_evaluator(cfg: Config, info: DistInfo) -> Evaluator | None:
    """The weight-free quick score (L1 to ground truth, else cycle L1 + domain accuracy)."""
    if not cfg.train.eval_every or not info.is_main:
        return None
    if not (Path(cfg.data.processed_dir) / "testA").is_dir():
        log.warning(
            "train.eval_every is set but %s has no test split: checkpoints are not "
            "scored and best.pt is the last checkpoint",
            cfg.data.processed_dir,
        )
        return None
    from cyclegan.evaluation.quick import quick_score

    channels = (cfg.model.input_nc, cfg.model.output_nc)
    return lambda g_ab, g_ba: quick_score(
        g_ab, g_ba, cfg.data.processed_dir, info.device, channels=channels
    )


def train(
    cfg: Config, evaluator: Evaluator | None = None, data: TrainData | None = None
) -> TrainResult:
    """Train CycleGAN per ``cfg``; resumable, distributed-aware, tracked.

    ``evaluator`` scores the generators every ``train.eval_every`` steps (lower is better) to
    pick ``best.pt``; by default the weight-free quick score is used. ``data`` is
    ``check_train_data(cfg)`` when the caller has already checked it (the CLI does, before it
    imports torch).
    """
    data = data or check_train_data(cfg)  # before any folder, process group or MLflow run
    progressive_stages(cfg)  # a bad schedule fails here, before processes or tracking start
    info = distributed.setup(cfg.train.device)
    out_dir = Path(cfg.train.out_dir)
    created = [d for d in (out_dir, out_dir / "checkpoints") if not d.exists()]
    try:
        return _train(cfg, info, evaluator or default_evaluator(cfg, info), data)
    except BaseException:
        if info.is_main:  # a failed run leaves no empty folders behind (never removes files)
            for d in reversed(created):
                with contextlib.suppress(OSError):
                    d.rmdir()
        raise
    finally:
        distributed.cleanup()


def _link_final(ckpt_dir: Path, last_path: Path, metrics: dict[str, Any]) -> None:
    """Make last.pt/best.pt point at the right step files (DVC may have removed them)."""
    best, last = ckpt_dir / "best.pt", ckpt_dir / "last.pt"
    if not last.exists():
        ckpt.link_as(last_path, last)
    best_step = metrics.get("best_step")
    best_file = ckpt_dir / f"step_{best_step:08d}.pt" if best_step else None
    if not best.exists():
        # no evaluator (or its file was rotated away): the last checkpoint is the best known
        ckpt.link_as(best_file if best_file and best_file.exists() else last_path, best)


def _nothing_to_do(cfg: Config, out_dir: Path, start: int) -> str:
    steps = cfg.train.steps
    if start == steps:
        return (
            f"nothing trained: the run in {out_dir} already finished train.steps={steps}; "
            "raise train.steps to train further"
        )
    return (
        f"nothing trained: the run in {out_dir} is already at step {start}, past "
        f"train.steps={steps} (a resumed run cannot go back); its checkpoints are unchanged. "
        f"For a {steps}-step model, set another train.out_dir"
    )


def _train(
    cfg: Config, info: DistInfo, evaluator: Evaluator | None, data: TrainData
) -> TrainResult:
    _setup_threads(cfg)
    if info.is_main:
        tracking.preflight(cfg.tracking)  # a dead server or bad store fails before any work
    out_dir, ckpt_dir = Path(cfg.train.out_dir), Path(cfg.train.out_dir) / "checkpoints"
    if info.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        for w in data.warnings():
            log.warning(w)
    seed_everything(cfg.seed + info.rank)
    model = CycleGAN(cfg, info)
    if info.is_main and model.precision is not None:
        log.info("%s", precision.summary(model.precision))
    start, metrics, resumed = _try_resume(cfg, model, info, ckpt_dir)
    if start == 0 and cfg.train.init_from:  # fine-tuning: weights only, fresh optimisers
        loaded = ckpt.load_initial_weights(model.nets, cfg.train.init_from, cfg.model)
        log.info("initialised %s from %s", ", ".join(loaded), cfg.train.init_from)
    if start >= cfg.train.steps:  # before MLflow: there is nothing to track
        if info.is_main and resumed is not None:
            _link_final(ckpt_dir, resumed, metrics)
        distributed.barrier(info)
        return TrainResult(
            out_dir=out_dir,
            steps=start,
            global_batch=cfg.train.batch_size * info.world_size,
            last_checkpoint=ckpt_dir / "last.pt",
            best_checkpoint=ckpt_dir / "best.pt" if (ckpt_dir / "best.pt").exists() else None,
            final_losses={},
            images_per_s=0.0,
            resumed_from=start,
            best_score=metrics.get("best_score"),
            warnings=data.warnings(),
            nothing_trained=_nothing_to_do(cfg, out_dir, start),
        )
    run_id_file = out_dir / tracking.RUN_ID_FILE
    run_id = run_id_file.read_text().strip() if start and run_id_file.is_file() else None
    run = None
    if info.is_main and cfg.tracking.enabled:
        run = open_run(cfg.tracking, out_dir, f"train-{cfg.hash()}", run_id, cfg.to_dict())
        run_id_file.write_text(run.run_id)
    try:
        if run is not None:
            _log_params(cfg, info, model, run)
        loop = _Loop(cfg, info, model, out_dir, ckpt_dir, evaluator, metrics, data, run)
        result = loop.run(start, resumed)
    except BaseException:
        if run is not None:
            run.finish("FAILED", wait_s=0)
        raise
    if run is not None:
        result.mlflow_run_id = run.run_id
        _log_final(result, run)
        note = run.finish("FINISHED", cfg.tracking.flush_wait_s)
        result.warnings += [note] if note else []
    return result


def _log_final(result: TrainResult, run: RunLogger) -> None:
    for name in ("loss_curves.png", "losses.csv"):
        if (result.out_dir / name).is_file():
            run.artifact(result.out_dir / name)
    run.artifact(result.last_checkpoint, "checkpoints")
    tags = {"last_checkpoint": result.last_checkpoint}
    if result.best_checkpoint is not None:
        run.artifact(result.best_checkpoint, "checkpoints")
        tags["best_checkpoint"] = result.best_checkpoint
    if result.warnings:
        tags["warning"] = result.warnings[-1]
    run.tags(tags)


class _Loop:
    """The step loop; split out of ``train`` so each piece fits on a screen."""

    def __init__(
        self,
        cfg: Config,
        info: DistInfo,
        model: CycleGAN,
        out_dir: Path,
        ckpt_dir: Path,
        evaluator: Evaluator | None,
        metrics: dict[str, Any],
        data: TrainData,
        run: RunLogger | None = None,
    ) -> None:
        self.cfg, self.info, self.model, self.evaluator = cfg, info, model, evaluator
        self.tracker = run  # rank 0 with tracking enabled only
        self.data = data
        self.out_dir, self.ckpt_dir = out_dir, ckpt_dir
        self.metrics = metrics  # best_score / best_step survive resume
        self.monitor = CollapseMonitor(cfg.train.collapse_window)
        self.global_batch = cfg.train.batch_size * info.world_size
        self.samples = (fixed_samples(cfg, "A"), fixed_samples(cfg, "B"))

    def _trim_log(self, start: int) -> None:
        """Drop log lines past the resumed step: those steps are about to be redone."""
        path = self.out_dir / "train_log.jsonl"
        if not path.is_file():
            return
        keep = [
            ln
            for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["step"] <= start
        ]
        path.write_text("".join(f"{ln}\n" for ln in keep))

    def _log(self, step: int, losses: dict[str, float], ips: float) -> None:
        record = {"step": step, "lr": self.model.lr(), "images_per_s": ips, **losses}
        with open(self.out_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            self.tracker.metrics({k: v for k, v in record.items() if k != "step"}, step=step)

    def _sample(self, step: int) -> None:
        a, b = self.samples
        if a is None or b is None:
            return
        path = sample_grid(
            self.model.g_ab,
            self.model.g_ba,
            a,
            b,
            self.out_dir / "samples" / f"step_{step:08d}.png",
        )
        if self.tracker is not None:
            self.tracker.artifact(path, "samples")

    def _evaluate(self, step: int) -> bool:
        """Score the current generators; True when this step is the new best."""
        scores = self.evaluator(self.model.g_ab, self.model.g_ba)  # type: ignore[misc]
        self.metrics.setdefault("history", []).append({"step": step, **scores})
        if self.tracker is not None:
            self.tracker.metrics({f"eval_{k}": v for k, v in scores.items()}, step=step)
        best = self.metrics.get("best_score")
        if best is not None and scores["score"] >= best:
            return False
        self.metrics.update(best_score=scores["score"], best_step=step)
        log.info("step %d: new best checkpoint (score %.4f)", step, scores["score"])
        return True

    def _checkpoint(self, step: int) -> Path:
        every = self.cfg.train.eval_every
        due = (
            self.info.is_main
            and self.evaluator is not None
            and every > 0
            and (step % every == 0 or step == self.cfg.train.steps)
        )
        is_best = self._evaluate(step) if due else False
        path = _save(self.cfg, self.model, self.info, self.ckpt_dir, step, self.metrics)
        if is_best and self.info.is_main:
            ckpt.link_as(path, self.ckpt_dir / "best.pt")
            if self.tracker is not None:
                self.tracker.tags({"best_step": step})
        return path

    def run(self, start: int, resumed: Path | None) -> TrainResult:
        cfg, info, tc = self.cfg, self.info, self.cfg.train
        if info.is_main:
            log.info(
                "world size %d, per-process batch %d, global batch %d, device %s",
                info.world_size,
                tc.batch_size,
                self.global_batch,
                info.device,
            )
        if info.is_main:
            self._trim_log(start)
            stages = progressive_stages(cfg)
            if len(stages) > 1:
                log.info(
                    "progressive resizing: %s",
                    ", ".join(f"{s.crop_size} px from step {s.first_step + 1}" for s in stages),
                )
        it_a = domain_loader(cfg, info, "train", "A", start, self.data.paths["A"])
        it_b = domain_loader(cfg, info, "train", "B", start, self.data.paths["B"])
        bar = progress_bar(
            range(start, tc.steps),
            initial=start,
            total=tc.steps,
            disable=not info.is_main,
            desc=f"train (batch {tc.batch_size}x{info.world_size})",
        )
        losses: dict[str, float] = {}
        last_path = resumed
        t0, ips = time.perf_counter(), 0.0
        for done, step in enumerate(bar, start=1):
            try:
                losses = self.model.train_step(next(it_a), next(it_b))
            except NonFiniteLossError as e:
                bar.close()
                msg = f"stopped at step {step + 1}: {e}; last good checkpoint: {last_path}"
                raise NonFiniteLossError(msg) from e
            losses = distributed.mean_across_ranks(info, losses)
            n = step + 1
            ips = done * self.global_batch / (time.perf_counter() - t0)
            if info.is_main:
                self._watch(n, losses, ips, bar)
            if n % tc.checkpoint_every == 0 or n == tc.steps:
                last_path = self._checkpoint(n)  # every rank: DDP state is gathered to rank 0
        distributed.barrier(info)
        return self._result(start, losses, ips, last_path)

    def _watch(self, n: int, losses: dict[str, float], ips: float, bar: Any) -> None:
        tc = self.cfg.train
        self.monitor.update(n, losses)
        show_progress(bar, G=f"{losses['G']:.3f}", D=f"{losses['D']:.3f}", ips=f"{ips:.1f}")
        if n % tc.log_every == 0 or n == tc.steps:
            self._log(n, losses, ips)
        if n % tc.sample_every == 0 or n == tc.steps:
            self._sample(n)

    def _finish_files(self, last_path: Path | None) -> None:
        if last_path is None:
            return
        _link_final(self.ckpt_dir, last_path, self.metrics)
        report.write_outputs(self.out_dir)

    def _result(
        self, start: int, losses: dict[str, float], ips: float, last_path: Path | None
    ) -> TrainResult:
        best = self.ckpt_dir / "best.pt"
        if self.info.is_main:
            self._finish_files(last_path)
        return TrainResult(
            out_dir=self.out_dir,
            steps=self.cfg.train.steps,
            global_batch=self.global_batch,
            last_checkpoint=self.ckpt_dir / "last.pt",
            best_checkpoint=best if best.exists() else None,
            final_losses=losses,
            images_per_s=ips,
            resumed_from=start,
            best_score=self.metrics.get("best_score"),
            warnings=self.data.warnings() + list(self.monitor.warnings),
        )
