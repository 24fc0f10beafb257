"""Import published CycleGAN generators as this project's checkpoints (config inferred).

Two formats, both mapped key by key onto our generators (which are the reference networks):

* ``reference`` (junyanz/pytorch-CycleGAN-and-pix2pix): ``latest_net_G_A.pth`` (A→B) and
  ``latest_net_G_B.pth`` (B→A) -- a folder holding both, or the two files -- or the single
  direction ``<name>_pretrained/latest_net_G.pth`` of the published models (``horse2zebra``,
  ``monet2photo``, ... resolve to their public URLs). Plain state dicts whose keys are ours;
  files saved by PyTorch < 0.4 also hold InstanceNorm running statistics, which the reference
  drops on load (``affine=False, track_running_stats=False``) and so do we.
* ``mmagic`` (MMagic / MMGeneration / MMEditing): one checkpoint with both generators in its
  ``state_dict``, built from mmcv ``ConvModule``s (``model.0.conv.weight``,
  ``model.3.block.0.conv.weight``...). MMagic/MMGeneration key a generator by its *target*
  domain (``generators.zebra`` maps horse→zebra; the domains in order of appearance are A
  then B, or give ``domains``); MMEditing 0.x keys them ``generators.a`` (A→B) and
  ``generators.b`` (B→A).

The config (generator, ``ngf``, blocks, norm, dropout, channel counts) is inferred from the
weights and checked by building the network and loading it strictly: every source key is
mapped, or reported as dropped with the reason; a shape mismatch names both shapes.
Checkpoints whose pickle holds objects other than tensors (mmengine's ``meta``/message hub)
are read by an unpickler that resolves no foreign classes, so no code from the file runs.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cyclegan.config import Config, ModelConfig
from cyclegan.models import GENERATORS, build_generator
from cyclegan.storage import download_s3_file, download_url, list_s3_prefix, parse_s3_uri
from cyclegan.training.checkpoint import clean_state_dict, save_checkpoint

FORMATS = ("reference", "mmagic")
REFERENCE_MODELS = (
    "apple2orange",
    "orange2apple",
    "summer2winter_yosemite",
    "winter2summer_yosemite",
    "horse2zebra",
    "zebra2horse",
    "monet2photo",
    "style_monet",
    "style_cezanne",
    "style_ukiyoe",
    "style_vangogh",
    "sat2map",
    "map2sat",
    "cityscapes_photo2label",
    "cityscapes_label2photo",
    "facades_photo2label",
    "facades_label2photo",
    "iphone2dslr_flower",
)
REFERENCE_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/pretrained_models/{name}.pth"
INFERRED = ("generator", "ngf", "norm", "dropout", "input_nc", "output_nc")
_STATS = (".running_mean", ".running_var", ".num_batches_tracked")
_RESNET_BLOCKS = {6: "resnet_6blocks", 9: "resnet_9blocks"}
_UNET_DEPTHS = {7: "unet_128", 8: "unet_256"}


class ImportCheckpointError(ValueError):
    """The source is not a generator checkpoint of the given format; says what and how to fix."""


@dataclass
class ImportResult:
    out: Path
    fmt: str
    source: str
    model: ModelConfig
    mapped: dict[str, dict[str, str]] = field(default_factory=dict)  # net -> {src: dst}
    dropped: list[str] = field(default_factory=list)  # "net: key (reason)"
    filled: list[str] = field(default_factory=list)
    untrained: list[str] = field(default_factory=list)

    def summary(self) -> str:
        m = self.model
        lines = [
            f"imported {self.source} ({self.fmt}) -> {self.out}",
            f"inferred: model.generator={m.generator} model.ngf={m.ngf} model.norm={m.norm} "
            f"model.dropout={str(m.dropout).lower()} model.input_nc={m.input_nc} "
            f"model.output_nc={m.output_nc}",
        ]
        for net, keys in self.mapped.items():
            lines.append(f"{net}: {len(keys)} keys mapped")
        lines += [f"dropped {d}" for d in self.dropped]
        lines += [f"filled {f}" for f in self.filled]
        for net in self.untrained:
            lines.append(
                f"warning: {net} is freshly initialised (the source has one direction only); "
                "use only the other direction, or fine-tune both"
            )
        sets = " ".join(f"--set model.{k}={str(getattr(m, k)).lower()}" for k in INFERRED)
        lines.append(f"fine-tune: cyclegan train {sets} --set train.init_from={self.out}")
        return "\n".join(lines)


# --- reading files without running their code ------------------------------------------


class _Inert:
    """Stands in for a class a checkpoint names that is not a tensor building block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _stand_in(qualified: str) -> tuple[type, str]:
    module, _, name = qualified.rpartition(".")
    return type(name, (_Inert,), {"__module__": "inert." + module}), qualified


def load_any(path: Path) -> Any:
    """``torch.load`` with ``weights_only``, always. Files naming other classes (mmengine meta)
    load with an inert stand-in allow-listed for each of them, so none of their code runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise _unreadable(path, e) from e
    except Exception as e:
        raise _unreadable(path, e) from e
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        with torch.serialization.safe_globals([_stand_in(n) for n in names]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _unreadable(path, e) from e


def _unreadable(path: Path, e: Exception) -> ImportCheckpointError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return ImportCheckpointError(
        f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {first}); pass the "
        "generator's .pth file (e.g. latest_net_G_A.pth or an MMagic iter_*.pth)"
    )


# --- getting the files ------------------------------------------------------------------


def _fetch(src: str, work: Path) -> Path:
    """A local path for ``src`` (reference model name, URL, ``s3://`` object or prefix)."""
    if src in REFERENCE_MODELS:
        src = REFERENCE_URL.format(name=src)
    if src.startswith(("http://", "https://")):
        name = src.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "checkpoint.pth"
        return download_url(src, work / name)
    if src.startswith("s3://"):
        if src.endswith(".pth") or src.endswith(".pt"):
            return download_s3_file(src, work / src.rsplit("/", 1)[-1])
        bucket, _ = parse_s3_uri(src)
        folder = work / "s3"
        for key in list_s3_prefix(src):
            if key.endswith((".pth", ".pt")):
                download_s3_file(f"s3://{bucket}/{key}", folder / Path(key).name)
        return folder
    path = Path(src).expanduser()
    if not path.exists():
        raise ImportCheckpointError(
            f"checkpoint source not found: {src!r} is not an existing file or folder, an s3:// "
            f"URI, an http(s) URL or a published reference model ({', '.join(REFERENCE_MODELS)})"
        )
    return path


def _reference_files(paths: list[Path], direction: str, res: ImportResult) -> dict[str, Path]:
    """{net name: file} for the reference format: G_A -> G_AB, G_B -> G_BA, G -> ``direction``;
    other files (the discriminators ``latest_net_D_A.pth``...) are reported as dropped."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.rglob("*.pth")) if p.is_dir() else [p]
    found: dict[str, Path] = {}
    for f in files:
        if re.search(r"net_G_A\.pth$", f.name):
            found["G_AB"] = f
        elif re.search(r"net_G_B\.pth$", f.name):
            found["G_BA"] = f
    if not found:
        single = [f for f in files if re.search(r"net_G\.pth$", f.name)] or files
        if len(single) != 1:
            names = [str(f) for f in files] or "no .pth files"
            raise ImportCheckpointError(
                f"reference format: expected latest_net_G_A.pth and latest_net_G_B.pth, or one "
                f"latest_net_G.pth (or one .pth file), found {names}"
            )
        found["G_AB" if direction == "AtoB" else "G_BA"] = single[0]
    used = set(found.values())
    res.dropped += [f"{f} (not a generator file)" for f in files if f not in used]
    return found


# --- state dict translation and config inference -----------------------------------------


def _mmagic_generators(sd: dict[str, Any], domains: tuple[str, str] | None) -> dict[str, dict]:
    """{"G_AB": state dict, "G_BA": state dict} out of an MMagic/MMEditing ``state_dict``."""
    groups: dict[str, dict[str, Any]] = {}
    for k, v in sd.items():
        m = re.match(r"^generators\.([^.]+)\.(.+)$", k)
        if m and isinstance(v, torch.Tensor):
            groups.setdefault(m.group(1), {})[m.group(2)] = v
    if len(groups) != 2:
        raise ImportCheckpointError(
            f"mmagic format: expected two generators under 'generators.<domain>.', found "
            f"{sorted(groups) or 'none'} (keys start {sorted(sd)[:3]}); is this a CycleGAN "
            "checkpoint? Use --format reference for pytorch-CycleGAN-and-pix2pix files"
        )
    names = list(groups)
    if set(names) == {"a", "b"} and domains is None:  # MMEditing 0.x: generator 'a' maps A->B
        return {"G_AB": groups["a"], "G_BA": groups["b"]}
    dom_a, dom_b = domains or (names[0], names[1])
    missing = [d for d in (dom_a, dom_b) if d not in groups]
    if missing:
        raise ImportCheckpointError(
            f"mmagic format: domain(s) {missing} not in the checkpoint (it has {names})"
        )
    return {"G_AB": groups[dom_b], "G_BA": groups[dom_a]}  # keyed by target domain


def _mmagic_to_ours(sd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Rename ConvModule keys of the MMagic ResnetGenerator to the reference layout."""
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"model\.(\d+)\.block\.", k))}
    n = len(blocks)
    if not blocks or blocks != set(range(3, 3 + n)):
        raise ImportCheckpointError(
            "mmagic format: not an MMagic ResnetGenerator (no model.<i>.block.* residual "
            f"blocks at indices 3..; keys start {sorted(sd)[:3]})"
        )
    second = {int(m.group(1)) for k in sd if (m := re.match(r"model\.3\.block\.(\d+)\.", k))}
    seq = {0: 1, 1: 4, 2: 7, 3 + n: 10 + n, 4 + n: 13 + n, 5 + n: 17 + n}  # ConvModule -> conv
    out, mapping = {}, {}
    for k, v in sd.items():
        m = re.match(r"^model\.(\d+)\.(?:block\.(\d+)\.)?(conv|bn|in|norm)\.(.+)$", k)
        if m is None:
            raise ImportCheckpointError(f"mmagic format: unexpected generator key {k!r}")
        i, sub, kind, leaf = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        shift = 0 if kind == "conv" else 1  # the norm follows its conv
        if sub is None and i in seq:
            new = f"model.{seq[i] + shift}.{leaf}"
        elif sub is not None and 3 <= i < 3 + n:
            first = int(sub) == 0
            pos = (1 if first else 5 + (max(second) > 1)) + shift  # block.2 after a Dropout
            new = f"model.{10 + i - 3}.conv_block.{pos}.{leaf}"
        else:
            raise ImportCheckpointError(f"mmagic format: unexpected generator key {k!r}")
        out[new], mapping[k] = v, new
    return out, mapping


def infer_model(sd: dict[str, Any], where: str) -> ModelConfig:
    """Generator name, ngf, norm, dropout and channel counts from reference-layout keys."""
    convs = {k: v for k, v in sd.items() if k.endswith(".weight") and v.dim() == 4}
    if "model.model.0.weight" in sd:  # U-Net: level k's keys hold k + 1 "model" parts
        depth = max(k.split(".").count("model") for k in sd) - 1
        name = _UNET_DEPTHS.get(depth)
        first, last = sd["model.model.0.weight"], sd["model.model.3.weight"]
        ngf, in_nc, out_nc = first.shape[0], first.shape[1], last.shape[1]
        batch = any(k.endswith(".running_mean") for k in sd) and any(
            v.dim() == 1 and k.endswith(".weight") for k, v in sd.items()
        )
        norm = "batch" if batch else ("instance" if "model.model.1.model.1.bias" in sd else "none")
        dropout, what = False, f"U-Net with {depth} levels"
    elif "model.1.weight" in sd and any(".conv_block." in k for k in sd):
        blocks = {int(k.split(".")[1]) for k in sd if ".conv_block." in k}
        name, what = _RESNET_BLOCKS.get(len(blocks)), f"ResNet with {len(blocks)} blocks"
        first = sd["model.1.weight"]
        ngf, in_nc = first.shape[0], first.shape[1]
        out_nc = convs[max(convs, key=lambda k: int(k.split(".")[1]))].shape[0]
        block_convs = {int(k.split(".")[3]) for k in convs if k.startswith("model.10.conv_block")}
        dropout = 6 in block_convs
        norm = (
            "batch" if "model.2.weight" in sd else ("instance" if "model.1.bias" in sd else "none")
        )
    else:
        raise ImportCheckpointError(
            f"{where}: not a ResNet or U-Net generator of the reference layout (keys start "
            f"{sorted(sd)[:3]})"
        )
    if name is None:
        raise ImportCheckpointError(
            f"{where}: a {what}; the registry has {', '.join(sorted(GENERATORS))}"
        )
    return ModelConfig(
        generator=name, ngf=ngf, norm=norm, dropout=dropout, input_nc=in_nc, output_nc=out_nc
    )


def _fit(net: torch.nn.Module, sd: dict[str, Any], label: str, res: ImportResult) -> dict:
    """``sd`` made to match ``net`` exactly: unused InstanceNorm stats dropped, reference
    ``norm: none`` convs (no bias) get zero biases; anything else is an error naming keys."""
    own = net.state_dict()
    out = {}
    for k, v in sd.items():
        if k not in own and k.endswith(_STATS):
            res.dropped.append(f"{label}: {k} (InstanceNorm running statistic; unused)")
            continue
        out[k] = v
    for k in own:
        if k not in out and k.endswith(".bias") and res.model.norm == "none":
            out[k] = torch.zeros_like(own[k])
            res.filled.append(f"{label}: {k} = 0 (the reference has no bias with norm none)")
    missing = sorted(set(own) - set(out))
    unexpected = sorted(set(out) - set(own))
    shapes = [
        f"{k}: source {tuple(out[k].shape)} vs {res.model.generator} {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(out))
        if out[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ImportCheckpointError(
            f"{label}: the weights do not fit {res.model.generator}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}"
        )
    return out


def _state_dicts(
    fmt: str, paths: list[Path], direction: str, domains: tuple[str, str] | None, res: ImportResult
) -> dict[str, tuple[dict[str, Any], dict[str, str], str]]:
    """{net: (reference-layout state dict, {source key: our key}, label)}; keys of other
    networks (MMagic's discriminators) are reported in ``res.dropped``."""
    if fmt == "reference":
        out = {}
        for net, f in _reference_files(paths, direction, res).items():
            sd = load_any(f)
            if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
                sd = sd["state_dict"]
            if not isinstance(sd, dict) or not all(
                isinstance(v, torch.Tensor) for v in sd.values()
            ):
                raise ImportCheckpointError(f"{f}: expected a generator state dict of tensors")
            clean = clean_state_dict(sd)
            out[net] = (clean, dict(zip(sd, clean, strict=True)), str(f))
        return out
    if len(paths) != 1 or paths[0].is_dir():
        raise ImportCheckpointError("mmagic format: pass one checkpoint file (iter_*.pth)")
    raw = load_any(paths[0])
    sd = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict):
        raise ImportCheckpointError(f"{paths[0]}: no state_dict in the checkpoint")
    others: dict[str, int] = {}
    for k in clean_state_dict(sd):
        if not k.startswith("generators."):
            others[k.split(".")[0]] = others.get(k.split(".")[0], 0) + 1
    for prefix, count in others.items():
        res.dropped.append(f"{paths[0]}: {count} {prefix}.* keys (not a generator)")
    out = {}
    for net, gsd in _mmagic_generators(clean_state_dict(sd), domains).items():
        ours, mapping = _mmagic_to_ours(gsd)
        out[net] = (ours, mapping, f"{paths[0]} {net}")
    return out


def import_checkpoint(
    sources: list[str],
    out: Path,
    fmt: str,
    base: Config | None = None,
    direction: str = "AtoB",
    domains: tuple[str, str] | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """Published generator weights -> ``out`` (a checkpoint evaluate/export/translate/
    ``train.init_from`` accept). ``base`` supplies everything but the inferred model keys."""
    if fmt not in FORMATS:
        raise ImportCheckpointError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ImportCheckpointError(f"{out} exists; pass --overwrite to replace it")
    base = base or Config()
    res = ImportResult(out, fmt, " ".join(sources), base.model)
    with tempfile.TemporaryDirectory(prefix="cyclegan-import-") as tmp:
        paths = [_fetch(s, Path(tmp) / str(i)) for i, s in enumerate(sources)]
        found = _state_dicts(fmt, paths, direction, domains, res)
    models = {net: infer_model(sd, label) for net, (sd, _, label) in found.items()}
    if len(set(models.values())) > 1:
        detail = "; ".join(f"{n}: {m}" for n, m in models.items())
        raise ImportCheckpointError(f"the two generators differ in architecture: {detail}")
    inferred = next(iter(models.values()))
    model = dataclasses.replace(base.model, **{k: getattr(inferred, k) for k in INFERRED})
    cfg = dataclasses.replace(base, model=model)
    res.model = model
    torch.manual_seed(cfg.seed)
    nets = {}
    for net in ("G_AB", "G_BA"):
        g = build_generator(model)
        if net in found:
            sd, mapping, label = found[net]
            g.load_state_dict(_fit(g, sd, label, res), strict=True)
            res.mapped[net] = {k: v for k, v in mapping.items() if v in g.state_dict()}
        else:
            res.untrained.append(net)
        nets[net] = g.state_dict()
    state = {
        "config": cfg.to_dict(),
        "step": 0,
        "nets": nets,
        "metrics": {},
        "imported": {
            "format": fmt,
            "source": res.source,
            "mapped": res.mapped,
            "dropped": res.dropped,
            "filled": res.filled,
            "untrained": res.untrained,
        },
    }
    save_checkpoint(out, state)
    return res
