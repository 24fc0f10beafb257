"""Checkpoint files: atomic writes, ``weights_only`` loads, torn-file detection, rotation.

A checkpoint is a plain dict (see docs/CONTRACTS.md): ``config`` (dict), ``step``, ``nets``
({"G_AB", "G_BA", "D_A", "D_B"} state dicts), ``optimizers``, ``schedulers``, ``scaler``,
``pools``, ``rng``, ``metrics``, ``versions``. Only types ``torch.load(weights_only=True)``
accepts may appear, so loading a checkpoint never runs arbitrary pickled code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclegan.config import Config, ConfigError, config_from_dict
from cyclegan.models import build_generator, reverse_model
from cyclegan.storage import atomic_writer, temp_file

log = logging.getLogger(__name__)

STEP_RE = re.compile(r"^step_(\d+)\.pt$")
REQUIRED_KEYS = ("config", "step", "nets")
_PREFIXES = ("module.", "_orig_mod.")
_SCALARS = (
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    type(None),
    torch.dtype,
    torch.device,
    torch.Size,
)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, read or applied; the message names the file."""


def step_filename(step: int) -> str:
    """``step_00000200.pt`` (zero-padded so names sort like steps)."""
    return f"step_{step:08d}.pt"


def _check_types(obj: Any, where: str) -> None:
    """Refuse, before writing, anything ``torch.load(weights_only=True)`` would refuse."""
    if type(obj) in (torch.Tensor, nn.Parameter, *_SCALARS) or isinstance(obj, torch.dtype):
        return
    if isinstance(obj, Mapping) and type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int, float, bool, type(None)):
                raise CheckpointError(f"checkpoint state {where}: key {k!r} is not a plain key")
            _check_types(v, f"{where}.{k}")
        return
    if type(obj) in (list, tuple, set):
        for i, v in enumerate(obj):
            _check_types(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"checkpoint state {where} is a {type(obj).__module__}.{type(obj).__qualname__}; only "
        "tensors, dicts, lists, tuples, str, int, float, bool and None can be saved "
        "(checkpoints load with weights_only=True) - convert it, e.g. with .tolist() or a dict"
    )


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: a temp file in the same folder, fsync, then ``os.replace``.

    A crash mid-write leaves the previous file intact (never a torn ``path``).
    """
    path = Path(path)
    _check_types(state, "state")
    with atomic_writer(path) as f:
        torch.save(state, f)
    return path


def link_as(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` (``last.pt``, ``best.pt``) hold ``src``'s content, atomically.

    A hard link (no extra disk space) that outlives rotation deleting ``src``; a copy where
    the filesystem has no hard links. ``dst`` is replaced in one ``os.replace``, never torn.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise CheckpointError(f"checkpoint {src} not found (cannot link it as {dst.name})")
    tmp_name = temp_file(dst)
    os.unlink(tmp_name)
    try:
        try:
            os.link(src, tmp_name)
        except OSError:
            shutil.copyfile(src, tmp_name)
            with open(tmp_name, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_name, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    return dst


def _looks_like_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head in (b"", b"PK\x03\x04")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; every failure is a ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e) and _looks_like_zip(path):
            lines = [ln.strip() for ln in str(e).splitlines() if "WeightsUnpickler" in ln]
            first = lines[0] if lines else str(e).strip().splitlines()[0]
            raise CheckpointError(
                f"checkpoint {path} contains objects that weights_only loading refuses "
                f"(not written by save_checkpoint?): {first}"
            ) from e
        raise _corrupt(path, e) from e
    except Exception as e:
        raise _corrupt(path, e) from e
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} is not a CycleGAN checkpoint: it holds a "
            f"{type(state).__name__}, expected a dict with keys {list(REQUIRED_KEYS)}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a CycleGAN checkpoint: no {missing} keys")
    return state


def _corrupt(path: Path, e: Exception) -> CheckpointError:
    detail = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    if _looks_like_zip(path):
        return CheckpointError(f"checkpoint {path} is corrupt or truncated: {detail}")
    return CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint file: {detail}")


def step_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` for every ``step_N.pt`` in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_RE.match(p.name))]
    return sorted(found, reverse=True)


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest ``step_N.pt`` that loads; torn ones are skipped with a warning."""
    for _step, path in step_checkpoints(folder):
        try:
            load_checkpoint(path)
        except CheckpointError as e:
            log.warning("skipping unreadable checkpoint: %s", e)
            continue
        return path
    return None


def rotate_checkpoints(folder: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest ``step_N.pt`` (best.pt / last.pt are kept)."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    removed = []
    for _step, path in step_checkpoints(folder)[keep_last:]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes from every key."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def _preview(items: list[str], n: int = 5) -> str:
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_net_state(net: nn.Module, state: Mapping[str, Any], what: str) -> None:
    """Load ``state`` into ``net`` strictly; a mismatch names the keys and shapes.

    ``what`` names the source in the error, e.g. ``"checkpoint runs/x/last.pt nets.G_AB"``.
    """
    state = clean_state_dict(state)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys [{_preview(missing)}]")
    if unexpected:
        problems.append(f"unexpected keys [{_preview(unexpected)}]")
    if shapes:
        problems.append(f"shape mismatches [{_preview(shapes)}]")
    if problems:
        raise CheckpointError(
            f"{what} does not match the network it is loaded into: {'; '.join(problems)}"
        )
    net.load_state_dict(state, strict=True)


def load_generators(path: str | Path, device: Any = "cpu") -> tuple[Config, nn.Module, nn.Module]:
    """Rebuild G_AB and G_BA from a checkpoint's own config; plain modules in eval mode."""
    path = Path(path)
    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        cfg = config_from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path}: its config is invalid: {e}") from e
    nets = ckpt["nets"]
    generators = []
    for name, mcfg in (("G_AB", cfg.model), ("G_BA", reverse_model(cfg.model))):
        if not isinstance(nets, dict) or name not in nets:
            raise CheckpointError(f"checkpoint {path} has no nets.{name}")
        try:
            net = build_generator(mcfg)
        except ValueError as e:
            raise CheckpointError(f"checkpoint {path}: {e}") from e
        what = f"checkpoint {path} nets.{name} (generator {cfg.model.generator!r})"
        load_net_state(net, nets[name], what)
        generators.append(net.to(device).eval())
    return cfg, generators[0], generators[1]


def final_checkpoint(run_dir: str | Path) -> Path | None:
    """A finished run's model: ``<run>/checkpoints/best.pt``, else ``last.pt``, else None."""
    folder = Path(run_dir) / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (folder / name).is_file():
            return folder / name
    return None


_ARCH_KEYS = ("generator", "ngf", "norm", "input_nc", "output_nc")
_DISC_KEYS = ("discriminator", "ndf", "n_layers_d", "num_scales", "norm", "input_nc", "output_nc")


def load_initial_weights(nets: Mapping[str, nn.Module], path: str | Path, mcfg: Any) -> list[str]:
    """``train.init_from``: copy a checkpoint's network weights (nothing else) into ``nets``.

    Both generators must be present and of this run's architecture; the discriminators are
    taken when present and of the same architecture, else they start fresh. Returns the
    names of the networks loaded.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    where = f"train.init_from={path}"
    try:
        src = config_from_dict(ckpt["config"]).model
    except ConfigError as e:
        raise CheckpointError(f"{where}: its config is invalid: {e}") from e
    diffs = [
        f"model.{k}: checkpoint {getattr(src, k)!r}, this run {getattr(mcfg, k)!r}"
        for k in _ARCH_KEYS
        if getattr(src, k) != getattr(mcfg, k)
    ]
    if diffs:
        raise CheckpointError(
            f"{where}: the checkpoint's generators are another architecture ({'; '.join(diffs)})"
            "; set those model keys to the checkpoint's values"
        )
    same_d = all(getattr(src, k) == getattr(mcfg, k) for k in _DISC_KEYS)
    loaded = []
    for name, net in nets.items():
        state = ckpt["nets"].get(name) if isinstance(ckpt["nets"], dict) else None
        if state is None or (name.startswith("D") and not same_d):
            if name.startswith("G"):
                raise CheckpointError(f"{where}: the checkpoint has no nets.{name}")
            continue
        load_net_state(net, state, f"{where} nets.{name}")
        loaded.append(name)
    return loaded
