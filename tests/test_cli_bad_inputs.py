"""Every ``cyclegan`` subcommand against a corpus of bad inputs: a clear one-line error, the
documented exit code, never a Python traceback (issue 12, "Done when").

TABLE-DRIVEN: add a row to ``CASES`` (or a command to ``PARAMS_COMMANDS``) for a new subcommand.
Rows run in-process through ``cyclegan.cli.main`` (the same code path as the console script,
milliseconds each); ``SUBPROCESS_CASES`` run a few as real ``python -m cyclegan.cli`` processes
(about 2-3 s each) to prove the real entry point and its logging behave the same.
``{d}`` in an argument is the corpus folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from cyclegan.cli import main
from tests.train_utils import run_cli


class Case(NamedTuple):
    argv: list[str]
    code: int  # 2 = bad input (the guide's rule), 1 = ran but found a problem, 0 = fine
    fragment: str  # must appear in stderr ({d} = the corpus folder)


def _write_corpus(d: Path) -> None:
    """Bad params, bad data, bad models: each file is one way users get it wrong."""
    params = {
        "garbage.yaml": b"train: [1, 2\n",
        "utf16.yaml": "train:\n  steps: 3\n".encode("utf-16"),
        "empty.yaml": b"",
        "comments.yaml": b"# nothing here\n",
        "list.yaml": b"- 1\n- 2\n",
        "unknown_key.yaml": b"train:\n  stepz: 3\n",
        "unknown_gen.yaml": b"model:\n  generator: resnet_7blocks\n",
        "unknown_disc.yaml": b"model:\n  discriminator: stylegan\n",
        "dup.yaml": b"train:\n  steps: 3\n  steps: 4\n",
        "binary.yaml": bytes(range(256)),
        "bad_value.yaml": b"train:\n  batch_size: 0\n",
    }
    for name, data in params.items():
        (d / name).write_bytes(data)
    garbage_img = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    for split in ("trainA", "trainB", "testA", "testB"):
        (d / "corrupt" / split).mkdir(parents=True)
        for i in range(2):
            (d / "corrupt" / split / f"{i}.png").write_bytes(garbage_img)
    (d / "empty").mkdir()
    (d / "notes.txt").write_text("not a folder\n")
    (d / "full").mkdir()
    (d / "full" / "keep.txt").write_text("a user's file\n")
    (d / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 10)
    (d / "torn.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    (d / "garbage.onnx").write_bytes(b"not onnx at all")
    (d / "fake.zip").write_bytes(b"this is no zip")
    import torch

    torch.save(torch.zeros(3), d / "tensor.pt")
    torch.save({"config": {"model": {"generator": "nope"}}, "step": 1, "nets": {}}, d / "alien.pt")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "img.png")
    for split in ("imgs", "ds/trainA", "ds/trainB", "ds/testA", "ds/testB"):
        (d / split).mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / split / "a.png")


# Every command that reads params, with arguments that would otherwise be valid.
PARAMS_COMMANDS: list[list[str]] = [
    ["data", "validate", "{d}/corrupt"],
    ["data", "fetch"],
    ["preprocess"],
    ["train"],
    ["evaluate"],
    ["export"],
    ["register"],
    ["promote"],
    ["rollback"],
    ["lineage", "models:/cyclegan@champion"],
    ["doctor"],
    ["import-checkpoint", "{d}/nowhere.pth", "{d}/out.pt"],
]
BAD_PARAMS: list[tuple[list[str], str]] = [
    (["--params", "{d}/missing.yaml"], "error: params file not found: {d}/missing.yaml"),
    (
        ["--params", "{d}/garbage.yaml"],
        "error: {d}/garbage.yaml: not valid YAML: line 2, column 1: expected ',' or ']', but "
        "got '<stream end>' (while parsing a flow sequence started on line 1)",
    ),
    (["--params", "{d}/utf16.yaml"], "error: {d}/utf16.yaml: saved as UTF-16"),
    (["--params", "{d}/binary.yaml"], "error: {d}/binary.yaml: contains NUL bytes"),
    (["--params", "{d}/empty.yaml"], "error: {d}/empty.yaml: the file is empty"),
    (["--params", "{d}/comments.yaml"], "error: {d}/comments.yaml: the file is empty"),
    (["--params", "{d}/list.yaml"], "top level must be a mapping, got list"),
    (["--params", "{d}/unknown_key.yaml"], "error: train.stepz: unknown key (valid keys: "),
    (["--params", "{d}/unknown_gen.yaml"], "error: model.generator: unknown generator"),
    (["--params", "{d}/unknown_disc.yaml"], "error: model.discriminator: unknown discriminator"),
    (["--params", "{d}/dup.yaml"], "error: train.steps: duplicate key on lines 2 and 3 of"),
    (["--params", "{d}/bad_value.yaml"], "error: train.batch_size: must be >= 1, got 0"),
    (["--set", "model.generator=resnet_7blocks"], "error: model.generator: unknown generator"),
    (["--set", "train.steps"], "error: override 'train.steps': expected dotted.key=value"),
    (["--set", "seed.x=1"], "error: seed: must be an integer, got {'x': 1}"),
]

RUN = ["--set", "tracking.enabled=false", "--set", "train.out_dir={d}/run"]
TRAIN, EVAL, EXPORT = ["train", *RUN], ["evaluate", *RUN], ["export", *RUN]
TRANSLATE = ["translate", "{d}/img.png", "{d}/o"]
TORCH = ["--backend", "torch"]
SQLITE = ["--set", "tracking.uri=sqlite:///{d}/mlflow.db"]
CASES: list[Case] = [
    # registry: no trained model, unknown model names, not a model URI
    Case(["register", *RUN], 2, "error: tracking.enabled is false: registering needs an MLflow"),
    Case(
        ["register", *SQLITE, "--set", "train.out_dir={d}/run"],
        2,
        "error: no checkpoint at {d}/run/checkpoints/best.pt",
    ),
    Case(
        ["promote", *SQLITE, "--model", "nosuch"], 2, "error: registered model 'nosuch' not found"
    ),
    Case(["rollback", *SQLITE, "--model", "nosuch"], 2, "error: registered model 'nosuch' not"),
    Case(["lineage", "models:/nosuch@champion", *SQLITE], 2, "registered model 'nosuch' not"),
    Case(["lineage", "notauri", *SQLITE], 2, "error: 'notauri' is not a model URI: use models:/"),
    # doctor: a dead tracking server is a finding (exit 1), not a crash
    Case(
        ["doctor", "--set", "tracking.uri=http://127.0.0.1:9", "--set", "tracking.timeout_s=1"],
        1,
        "",
    ),
    Case(["tracking", "sync", "{d}/nowhere"], 2, "error: run folder {d}/nowhere not found"),
    # import-checkpoint: missing and garbage sources
    Case(["import-checkpoint", "{d}/nowhere.pth", "{d}/o.pt"], 2, "checkpoint source not found"),
    Case(
        ["import-checkpoint", "{d}/garbage.pt", "{d}/o.pt"],
        2,
        "error: {d}/garbage.pt: not a readable PyTorch checkpoint",
    ),
    # argparse: unknown command, missing and invalid arguments
    Case(["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    Case(["translate"], 2, "the following arguments are required: input, output"),
    Case([*TRANSLATE, "--direction", "CtoD"], 2, "invalid choice"),
    Case(["data", "synth", "{d}/s", "--train", "x"], 2, "invalid int value: 'x'"),
    # data synth / import / validate / fetch
    Case(["data", "synth", "{d}/full"], 2, "error: {d}/full already exists and is not empty"),
    Case(["data", "synth", "{d}/s", "--size", "4"], 2, "error: synth: --size must be between"),
    Case(["data", "import", "{d}/nowhere", "{d}/i"], 2, "error: dataset source not found: "),
    Case(["data", "import", "{d}/fake.zip", "{d}/i"], 2, "error: {d}/fake.zip: not a .zip or"),
    Case(["data", "import", "{d}/imgs", "{d}/full"], 2, "error: {d}/full already exists and"),
    Case(["data", "validate", "{d}/nowhere"], 2, "error: dataset folder not found: {d}/nowhere"),
    Case(["data", "validate", "{d}/corrupt"], 1, ""),  # the report goes to stdout
    Case(
        ["data", "fetch", "--set", "data.source={d}/nowhere", "--set", "data.raw_dir={d}/r"],
        2,
        "error: dataset source not found: ",
    ),
    # preprocess: missing and unusable raw data
    Case(
        ["preprocess", "--set", "data.raw_dir={d}/nowhere"],
        2,
        "error: preprocess: raw data folder {d}/nowhere not found",
    ),
    Case(
        ["preprocess", "--set", "data.raw_dir={d}/corrupt", "--set", "data.processed_dir={d}/p"],
        2,
        "error: preprocess: {d}/corrupt is not a usable dataset",
    ),
    # train: no data, empty data, corrupt data that `preprocess` never saw
    Case([*TRAIN, "--set", "data.processed_dir={d}/nowhere"], 2, "run `cyclegan preprocess`"),
    Case(
        [*TRAIN, "--set", "data.processed_dir={d}/empty"],
        2,
        "has no trainA/ folder: run `cyclegan preprocess`",
    ),
    Case(
        [*TRAIN, "--set", "data.processed_dir={d}/corrupt"],
        2,
        "0 usable image(s), data.min_train is 1 (2 unreadable)",
    ),
    # evaluate / export: no run, missing, garbage, torn, foreign and alien checkpoints
    Case(EVAL, 2, "error: no checkpoint to evaluate: neither {d}/run/checkpoints/best.pt"),
    Case([*EVAL, "--model", "{d}/nowhere.pt"], 2, "error: --model {d}/nowhere.pt: not found"),
    Case([*EVAL, "--model", "{d}/garbage.pt"], 2, "error: data/processed/testA not found"),
    Case(
        [*EVAL, "--model", "{d}/garbage.pt", "--data", "{d}/corrupt"],
        2,
        "error: no usable images in {d}/corrupt/testA (2 unreadable)",
    ),
    Case(
        [*EVAL, "--model", "{d}/garbage.pt", "--data", "{d}/ds"],
        2,
        "error: checkpoint {d}/garbage.pt is not a PyTorch checkpoint file",
    ),
    Case(
        [*EVAL, "--model", "{d}/alien.pt", "--data", "{d}/ds"],
        2,
        "model.generator: unknown generator 'nope'",
    ),
    Case(
        [*EVAL, "--model", "{d}/imgs", "--data", "{d}/ds"],
        2,
        "error: {d}/imgs/generator_AtoB.onnx: ONNX model not found",
    ),
    Case(EXPORT, 2, "error: no checkpoint to export"),
    Case(
        [*EXPORT, "--checkpoint", "{d}/torn.pt"],
        2,
        "error: checkpoint {d}/torn.pt is corrupt or truncated",
    ),
    Case(
        [*EXPORT, "--checkpoint", "{d}/tensor.pt"],
        2,
        "is not a CycleGAN checkpoint: it holds a Tensor",
    ),
    Case(
        [*EXPORT, "--checkpoint", "{d}/alien.pt"],
        2,
        "its config is invalid: model.generator: unknown generator 'nope'",
    ),
    # translate: wrong backend both ways, garbage models, no inputs, bad batch size
    Case(
        [*TRANSLATE, "--model", "{d}/tensor.pt"],
        2,
        "error: {d}/tensor.pt is a PyTorch checkpoint, not an ONNX model: pass --backend torch",
    ),
    Case(
        [*TRANSLATE, "--model", "{d}/garbage.onnx", *TORCH],
        2,
        "is an ONNX model, not a PyTorch checkpoint: pass --backend onnx",
    ),
    Case([*TRANSLATE, "--model", "{d}/imgs", *TORCH], 2, "error: no checkpoint in {d}/imgs"),
    Case([*TRANSLATE, "--model", "{d}/garbage.onnx"], 2, "not a loadable ONNX model"),
    Case([*TRANSLATE, "--model", "{d}/garbage.pt", *TORCH], 2, "not a PyTorch checkpoint file"),
    Case(
        ["translate", "{d}/empty", "{d}/o"],
        2,
        "error: no input images in folder {d}/empty: it holds nothing",
    ),
    Case(["translate", "{d}/no/*.jpg", "{d}/o"], 2, "error: no input images: {d}/no/*.jpg"),
    Case([*TRANSLATE, "--batch-size", "0"], 2, "error: batch_size must be >= 1, got 0"),
]
CASES += [Case([*cmd, *bad], 2, msg) for cmd in PARAMS_COMMANDS for bad, msg in BAD_PARAMS]

# Real processes: the console entry point, its logging setup and lazy imports (~2-3 s each).
SUBPROCESS_CASES: list[Case] = [
    Case(["train", "--params", "{d}/utf16.yaml"], 2, "error: {d}/utf16.yaml: saved as UTF-16"),
    Case([*TRAIN, "--set", "data.processed_dir={d}/corrupt"], 2, "(2 unreadable)"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    _write_corpus(d)
    return d


def _fill(case: Case, d: Path) -> tuple[list[str], str]:
    return [a.replace("{d}", str(d)) for a in case.argv], case.fragment.replace("{d}", str(d))


def _id(case: Case) -> str:
    return " ".join(case.argv).replace("{d}/", "")[:80]


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_bad_input_in_process(
    case: Case,
    corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./params.yaml; relative defaults land in a scratch folder
    argv, fragment = _fill(case, corpus)
    with caplog.at_level(logging.INFO):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    err = capsys.readouterr().err
    assert code == case.code, err
    assert fragment in err, err
    assert "Traceback" not in err + caplog.text
    if code == 2 and not err.startswith("usage:"):  # one clear line, the last one
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert not (corpus / "run" / "checkpoints").exists()  # failed runs leave no empty folders
    assert (corpus / "full" / "keep.txt").is_file()  # a user's folder is never replaced


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=_id)
def test_bad_input_real_process(case: Case, corpus: Path, tmp_path: Path) -> None:
    argv, fragment = _fill(case, corpus)
    proc = run_cli(argv, cwd=tmp_path, timeout=120)
    assert proc.returncode == case.code, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_unexpected_error_is_one_line_exit_1_with_the_traceback_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import cyclegan.preprocess

    def broken(cfg: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cyclegan.preprocess, "preprocess", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("CYCLEGAN_DEBUG", raising=False)
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert main(["preprocess"]) == 1
    err = capsys.readouterr().err
    (log,) = tmp_path.glob("cyclegan-crash-*.log")
    assert err == (
        "error: internal error (ZeroDivisionError: division by zero). This is a bug in cyclegan, "
        f"not in your input; the traceback is in {log} (please attach it to a bug report)\n"
    )
    text = log.read_text()
    assert text.startswith("Traceback") and "in broken" in text
    monkeypatch.setenv("CYCLEGAN_DEBUG", "1")
    assert main(["preprocess"]) == 1
    assert "Traceback" in capsys.readouterr().err
