"""Typed config: params.yaml loads, every bad value names its dotted key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cyclegan.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    flatten,
    load_config,
    parse_override,
)

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_load_and_cover_every_key() -> None:
    cfg = load_config(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    # params.yaml is the single source: it spells out every key the dataclasses define.
    assert set(flatten(raw)) == set(flatten(Config().to_dict()))
    assert cfg.model.generator == raw["model"]["generator"]
    assert cfg.export.parity_sizes == tuple(tuple(x) for x in raw["export"]["parity_sizes"])


def test_defaults_are_frozen_and_hash_is_stable() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]
    assert cfg.hash() == Config().hash()
    assert cfg.hash() != config_from_dict({"seed": 1}).hash()
    assert config_from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1, got 0"),
        ({"train": {"steps": "ten"}}, "train.steps: must be an integer, got 'ten'"),
        ({"train": {"stepz": 3}}, "train.stepz: unknown key (valid keys: "),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"loss": {"gan_mode": "wgan"}}, "loss.gan_mode: must be one of ['lsgan', 'vanilla', "),
        ({"model": {"norm": "layer"}}, "model.norm: must be one of ['instance', 'batch', 'none']"),
        ({"optim": {"lr": -1}}, "optim.lr: must be > 0.0, got -1.0"),
        (
            {"train": {"amp": True}},
            "train.amp: must be one of ['auto', 'none', 'bf16', 'fp16'], got True",
        ),
        ({"train": {"resume": "yes"}}, "train.resume: must be true or false, got 'yes'"),
        ({"train": {"device": "tpu"}}, "train.device: must be auto, cpu, cuda or cuda:N"),
        ({"transforms": {"load_size": 32, "crop_size": 64}}, "transforms.load_size: must be >="),
        ({"data": {"synth": {"size": 4}}}, "data.synth.size: must be >= 16, got 4"),
        ({"data": "x"}, "data: must be a mapping, got str"),
        ({"export": {"parity_sizes": [[64]]}}, r"export.parity_sizes\[0\]: must have 2 items"),
        ({"transforms": {"flip_prob": 1.5}}, "transforms.flip_prob: must be <= 1.0, got 1.5"),
    ],
)
def test_bad_values_name_the_dotted_key(raw: dict, message: str) -> None:
    with pytest.raises(
        ConfigError,
        match="^" + message.replace("(", r"\(").replace("[", r"\[")
        if "\\" not in message
        else "^" + message,
    ):
        config_from_dict(raw)


def test_int_is_accepted_for_float_but_bool_is_not_a_number() -> None:
    assert config_from_dict({"optim": {"lr": 1}}).optim.lr == 1.0
    with pytest.raises(ConfigError, match="optim.lr: must be a number, got True"):
        config_from_dict({"optim": {"lr": True}})


def test_overrides_use_dvc_spelling(tmp_path: Path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  steps: 10\n")
    cfg = load_config(
        p,
        [
            "train.steps=25",
            "model.generator=resnet_9blocks",
            "optim.lr=1e-3",
            "export.parity_sizes=[[32, 48]]",
        ],
    )
    assert cfg.train.steps == 25
    assert cfg.model.generator == "resnet_9blocks"
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.export.parity_sizes == ((32, 48),)
    assert parse_override("a.b=") == ("a.b", "")
    with pytest.raises(ConfigError, match="override 'train.steps': expected dotted.key=value"):
        parse_override("train.steps")
    with pytest.raises(ConfigError, match="seed: is not a section, cannot set seed.x"):
        apply_overrides({"seed": 1}, ["seed.x=2"])
    with pytest.raises(ConfigError, match="train.stepz: unknown key"):
        load_config(p, ["train.stepz=3"])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping, got list"):
        load_config(bad)


def test_cli_reports_config_errors_without_traceback(capsys: pytest.CaptureFixture) -> None:
    from cyclegan.cli import main

    code = main(["preprocess", "--params", str(ROOT / "params.yaml"), "--set", "train.steps=0"])
    assert code == 2
    assert "error: train.steps: must be >= 1, got 0" in capsys.readouterr().err


def test_unknown_registry_names_fail_when_params_load() -> None:
    from cyclegan.config import DISCRIMINATOR_NAMES, GENERATOR_NAMES
    from cyclegan.models import DISCRIMINATORS, GENERATORS

    # config owns the names (no torch import at load), models builds each one: they agree
    assert set(GENERATOR_NAMES) == set(GENERATORS)
    assert set(DISCRIMINATOR_NAMES) == set(DISCRIMINATORS)
    with pytest.raises(ConfigError) as e:
        config_from_dict({"model": {"generator": "resnet_7blocks"}})
    assert str(e.value) == (
        "model.generator: unknown generator 'resnet_7blocks' "
        "(valid: resnet_6blocks, resnet_9blocks, resnet_9blocks_attn, resnet_9blocks_ds, "
        "unet_128, unet_256)"
    )
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.discriminator=stylegan"])
    assert str(e.value) == (
        "model.discriminator: unknown discriminator 'stylegan' "
        "(valid: multiscale, patchgan, patchgan_70, pixel)"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "train:\n  steps: 3\n".encode("utf-16"),
            "p.yaml: saved as UTF-16 (byte-order mark ff fe); params files must be UTF-8: "
            "re-save it as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8 OLD > NEW`, or your editor's "
            "encoding menu)",
        ),
        (
            "train:\n  steps: 3\n".encode("utf-16-be"),
            "p.yaml: contains NUL bytes (saved as UTF-16 without a byte-order mark?); params "
            "files must be UTF-8",
        ),
        (
            "# café\ntrain: {steps: 3}\n".encode("latin-1"),
            "p.yaml: not UTF-8 text (byte 0xe9 on line 1; Latin-1?); params files must be UTF-8",
        ),
        (
            b"",
            "p.yaml: the file is empty (or only comments), so every param would silently take "
            "its default; write the keys you mean, or `{}` to use all defaults on purpose",
        ),
        (b"# only\n\n# comments\n", "p.yaml: the file is empty (or only comments)"),
        (
            b"seed: 1\ntrain:\n  steps: 3\n  batch_size: 1\n  steps: 5\n",
            "train.steps: duplicate key on lines 3 and 5 of {path} (YAML would silently keep "
            "the last); remove one",
        ),
        (b"seed: 1\ntrain: {}\nseed: 2\n", "seed: duplicate key on lines 1 and 3 of {path}"),
    ],
)
def test_params_file_encoding_empty_and_duplicates(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(data)
    message = message.replace("{path}", str(path))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    text = str(e.value)
    assert text.startswith(message if not message.startswith("p.yaml") else f"{path}:"), text
    assert message.removeprefix("p.yaml") in text


def test_params_file_utf8_bom_and_explicit_empty_mapping_load(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes("\ufefftrain: {steps: 3}\n".encode())
    assert load_config(path).train.steps == 3
    path.write_text("{}  # all defaults, on purpose\n")
    assert load_config(path) == Config()
