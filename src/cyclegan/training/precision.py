"""``train.amp: auto`` (and ``train.channels_last: auto``) decided by measurement, per machine.

Whether bf16 pays off depends on the machine, not on a rule: on an AMD EPYC (Zen 4) a 3x3
convolution runs 1.8x faster in bf16, on the Intel Xeons we use 1.5x slower (BENCHMARKS.md).
So a short probe times forward+backward of the configured networks' dominant layers (the
generator's residual block: reflection pad, 3x3 conv, instance norm, ReLU; the discriminator's
widest convolution) in each precision and memory layout, interleaved and repeated, and picks the
fastest one whose speed-up over fp32 is above a noise margin. The result is cached in the user
cache directory, keyed by the device (CPU model and its bf16/fp16 instruction flags, or GPU name),
torch version, thread count and the probe shapes, so it runs once per machine and network size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cyclegan.config import Config

PROBE_VERSION = 1
MARGIN = 1.10  # a precision must beat fp32 by more than 10 % (load noise on shared cores)
SLOW = 3.0  # a candidate whose first call is 3x slower than fp32's is not timed further
BUDGET_S = 3.0  # no further rounds once the probe has run this long (one always completes)
DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "amx_fp16")


def choose(
    seconds: dict[str, float],
    amp: str = "auto",
    channels_last: bool | str = "auto",
    margin: float = MARGIN,
) -> tuple[str, bool]:
    """The fastest candidate whose speed-up over the baseline exceeds ``margin``.

    ``seconds`` maps candidates such as ``"none"``, ``"bf16"``, ``"bf16+cl"`` (channels_last)
    to probe times. A setting that is not ``auto`` is fixed: only candidates with it compete,
    and the baseline is fp32 (or the fixed precision) in the contiguous (or fixed) layout.
    """

    def split(key: str) -> tuple[str, bool]:
        name, _, cl = key.partition("+")
        return name, cl == "cl"

    base = (
        "none" if amp == "auto" else amp,
        False if channels_last == "auto" else bool(channels_last),
    )
    pool = {
        k: t
        for k, t in seconds.items()
        if (amp == "auto" or split(k)[0] == amp)
        and (channels_last == "auto" or split(k)[1] == bool(channels_last))
    }
    base_key = base[0] + ("+cl" if base[1] else "")
    if base_key not in pool:
        return base
    best = min(pool, key=pool.__getitem__)
    return split(best) if pool[base_key] / pool[best] > margin else base


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cyclegan`` (default ``~/.cache/cyclegan``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "cyclegan"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model plus the flags that decide bf16/fp16 speed."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()}"


def cpu_model(cpuinfo: str | None = None) -> str:
    """``model name`` from /proc/cpuinfo, with family/model and the flags that decide speed.

    One name covers several generations ("AMD EPYC" is Zen 2, 3 and 4 alike, and only Zen 4
    has fast bf16), so benchmarks and the probe's cache key need the family and model numbers
    and the bf16/fp16 instruction flags to tell the machines apart.
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    ident = [f"{k} {fields[k]}" for k in ("cpu family", "model") if k in fields]
    flags = set(fields.get("flags", "").split())
    have = [f for f in CPU_FLAGS if f in flags]
    extra = "; ".join(x for x in (", ".join(ident), " ".join(have)) if x)
    return f"{model} ({extra})" if extra else model


def probe_shapes(cfg: Config) -> dict[str, list[int]]:
    """[batch, channels, height, width] of the generator's and discriminator's dominant layers.

    Channels as configured; batch capped at 2 and sides at 16 so the probe takes seconds even
    where a precision is emulated (bf16 on an AVX2-only CPU is ~70x slower than fp32): the
    speed ratio between precisions is a property of the kernels, not of the image size.
    """
    m, b, size = cfg.model, min(cfg.train.batch_size, 2), cfg.transforms.crop_size
    side = min(max(size // 4, 4), 16)
    gen_c = m.ngf * 4 if m.generator.startswith("resnet") else m.ngf * 2  # residual blocks
    return {
        "generator_block": [b, gen_c, side, side],
        "discriminator_conv": [b, m.ndf * 2, side, side],
    }


class _ProbeNet(nn.Module):
    def __init__(self, shapes: dict[str, list[int]]) -> None:
        super().__init__()
        c, d = shapes["generator_block"][1], shapes["discriminator_conv"][1]
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.InstanceNorm2d(c), nn.ReLU(True)
        )
        self.disc = nn.Sequential(nn.Conv2d(d, d * 2, 4, padding=1), nn.LeakyReLU(0.2, True))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.block(x).float().mean() + self.disc(y).float().mean()


def candidates(device: torch.device) -> list[str]:
    names = ["none", "bf16"] if device.type == "cpu" else ["none", "bf16", "fp16"]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        names.remove("bf16")
    return [n + cl for n in names for cl in ("", "+cl")]


def run_probe(shapes: dict[str, list[int]], device: torch.device, rounds: int = 3) -> dict:
    """Seconds per forward+backward of the probe net for every candidate (min over rounds)."""
    torch.manual_seed(0)
    net = _ProbeNet(shapes).to(device)
    inputs = [torch.randn(s, device=device) for s in shapes.values()]
    names = candidates(device)

    def once(name: str, n: int) -> float:
        amp, cl = name.partition("+")[0], name.endswith("+cl")
        fmt = torch.channels_last if cl else torch.contiguous_format
        net.to(memory_format=fmt)
        xs = [x.contiguous(memory_format=fmt).requires_grad_(True) for x in inputs]
        _sync(device)
        t = time.perf_counter()
        for _ in range(n):
            with _autocast(device, amp):
                loss = net(*xs)
            loss.backward()
        _sync(device)
        return (time.perf_counter() - t) / n

    start = time.perf_counter()
    once("none", 1)  # warm-up: oneDNN primitive creation, thread pool
    first: dict[str, float] = {}
    slow: set[str] = set()
    for name in names:
        if name.endswith("+cl") and name[:-3] in slow:
            continue  # a layout does not rescue an emulated precision (and costs seconds)
        first[name] = once(name, 1)  # cold: kernel creation; seconds-long = emulated
        if first[name] < 1.0 or first[name] < SLOW * first["none"]:
            first[name] = once(name, 1)
        if first[name] > SLOW * first["none"]:
            slow.add(name)  # clearly slower than fp32: that time is the answer, no rounds
    n = max(1, min(20, int(0.05 / max(first["none"], 1e-6))))  # ~50 ms per timing
    best = {name: first[name] if name in slow else float("inf") for name in first}
    done = 0
    while done < rounds and (done == 0 or time.perf_counter() - start < BUDGET_S):
        for name in first:  # interleaved, so a load spike hits all candidates alike
            if name not in slow:
                best[name] = min(best[name], once(name, n))
        done += 1
    return {
        "seconds": {k: round(v, 6) for k, v in best.items()},
        "speedup_vs_fp32": {k: round(best["none"] / v, 3) for k, v in best.items()},
        "iterations": n,
        "too_slow": sorted(slow),
        "rounds": done,
        "probe_s": round(time.perf_counter() - start, 2),
    }


@contextlib.contextmanager
def _autocast(device: torch.device, amp: str) -> Iterator[None]:
    dtype = DTYPES[amp]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        yield


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(cfg: Config) -> torch.device:
    from cyclegan.training.distributed import pick_device

    return pick_device(cfg.train.device)


def precision_report(cfg: Config, device: torch.device | None = None) -> dict[str, Any]:
    """What ``auto`` resolves to on this machine for ``cfg``'s networks, with the probe figures.

    ``{"auto": "bf16" | "none" | "fp16", "channels_last": bool, "device": ..., "probe": {...},
    "cached": bool, ...}``; ``auto``/``channels_last`` are the picks for settings left at
    ``auto`` (explicit ``train.amp`` / ``train.channels_last`` values stay fixed in the pick).
    """
    device = device or _device(cfg)
    shapes = probe_shapes(cfg)
    key = {
        "version": PROBE_VERSION,
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads() if device.type == "cpu" else 0,
        "shapes": shapes,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"precision-{digest}.json"
    probe, cached = None, False
    if path.is_file():
        with contextlib.suppress(ValueError, OSError):
            stored = json.loads(path.read_text())
            probe, cached = (stored["probe"], True) if stored.get("key") == key else (None, False)
    if probe is None:
        probe = run_probe(shapes, device)
        with contextlib.suppress(OSError):  # a read-only home only costs a re-probe next time
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"key": key, "probe": probe}, indent=1))
            tmp.replace(path)
    amp, cl = choose(probe["seconds"], cfg.train.amp, cfg.train.channels_last)
    return {
        "auto": choose(probe["seconds"], "auto", cfg.train.channels_last)[0],
        "amp": amp,
        "channels_last": cl,
        "device": key["device"],
        "torch": key["torch"],
        "threads": key["threads"],
        "margin": MARGIN,
        "shapes": shapes,
        "probe": probe,
        "cached": cached,
        "cache_file": str(path),
    }


def summary(report: dict[str, Any]) -> str:
    """One log line: the pick and the figures behind it."""
    speed = ", ".join(f"{k} {v:.2f}x" for k, v in report["probe"]["speedup_vs_fp32"].items())
    return (
        f"precision: amp={report['amp']} channels_last={report['channels_last']} on "
        f"{report['device']}, {report['threads']} threads (probe speed-up vs fp32: {speed}; "
        f"margin {report['margin']:.2f}x; {'cached' if report['cached'] else 'measured'})"
    )


def mlflow_params(report: dict[str, Any]) -> dict[str, str]:
    """Flat ``precision.*`` params for MLflow."""
    out = {
        "precision.amp": report["amp"],
        "precision.channels_last": str(report["channels_last"]),
        "precision.auto": report["auto"],
        "precision.device": report["device"],
        "precision.cached": str(report["cached"]),
    }
    for k, v in report["probe"]["speedup_vs_fp32"].items():
        out[f"precision.speedup.{k.replace('+cl', '_channels_last')}"] = str(v)
    return out


def resolve(cfg: Config, info: Any) -> tuple[str, bool, dict[str, Any] | None]:
    """(amp, channels_last, report) for this run; the report is None when nothing is ``auto``.

    Under DDP the main process probes alone (ranks sharing a CPU would time each other) and
    every rank takes its pick, so all ranks run in the same precision.
    """
    tc = cfg.train
    if "auto" not in (tc.amp, tc.channels_last):
        return tc.amp, bool(tc.channels_last), None
    report = precision_report(cfg, info.device) if info.is_main else None
    if info.distributed:
        import torch.distributed as dist

        box = [report]
        dist.broadcast_object_list(box, src=0)
        report = box[0]
    assert report is not None
    return report["amp"], report["channels_last"], report
