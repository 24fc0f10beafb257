"""Issue 12, data side: hostile archives, links, odd layouts and user folders, through the CLI.

Each test plants one problem a user met, then asserts the exact message, exit code 2 (user
error, no traceback) and that nothing was lost, half-written or left behind.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from cyclegan.cli import main
from cyclegan.data.archive import _copy_limited
from cyclegan.data.errors import DataError
from cyclegan.data.importer import import_dataset
from cyclegan.data.ingest import MARK
from cyclegan.data.validate import validate_dataset
from tests.data_factory import make_layout

SPLITS = ["testA", "testB", "trainA", "trainB"]
COUNTS = {"trainA": 1, "trainB": 1, "testA": 1, "testB": 1}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _zip_layout(path: Path, extra: dict[str, bytes] | None = None, **kw: int) -> Path:
    """A zip holding ``ds/{trainA,...}/0.png`` (tiny fake PNGs) plus ``extra`` entries."""
    with zipfile.ZipFile(path, "w", **kw) as zf:
        for s in SPLITS:
            zf.writestr(f"ds/{s}/0.png", b"\x89PNG fake")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def _patch_zip(path: Path, *, method: int | None = None, flags: int | None = None) -> None:
    """Rewrite every local and central header's compression method / flag bits in place."""
    data = bytearray(path.read_bytes())
    for sig, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(sig)
        while at >= 0:
            if flags is not None:
                struct.pack_into("<H", data, at + flag_at, flags)
            if method is not None:
                struct.pack_into("<H", data, at + method_at, method)
            at = data.find(sig, at + 4)
    path.write_bytes(bytes(data))


def _assert_nothing_written(parent: Path, expected: list[str]) -> None:
    """No OUT, no staging or work folders: the parent holds exactly what it held before."""
    assert sorted(p.name for p in parent.iterdir()) == sorted(expected)


# --- 1. data fetch never empties a user's folder ----------------------------------------------


def test_fetch_refuses_a_users_folder_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = make_layout(tmp_path / "raw", COUNTS)
    (raw / "NOTES.txt").write_text("my labelling notes")
    before = _snapshot(raw)
    args = ["data", "fetch", "--set", f"data.raw_dir={raw}"]
    args += ["--set", "data.synth={train: 2, test: 1, size: 16, seed: 0}"]
    code, out, err = _cli(capsys, *args)
    assert code == 2 and out == ""
    assert err == (
        f"error: {raw} (data.raw_dir) already holds files that `cyclegan data fetch` did not "
        "write; refusing to replace them. Move them elsewhere (or point data.source at them to "
        "import them), or pass --overwrite to replace the folder (under `dvc repro`: move or "
        "delete it first).\n"
    )
    assert _snapshot(raw) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no staging leftovers

    assert _cli(capsys, *args, "--overwrite")[0] == 0
    assert not (raw / "NOTES.txt").exists()
    assert json.loads((raw / MARK).read_text()) == {
        "written_by": "cyclegan data fetch",
        "source": "synth",
    }
    # its own earlier output is replaced without --overwrite (a params change re-runs it)
    first = _snapshot(raw)
    code, out, _ = _cli(capsys, *args[:-1], "data.synth={train: 3, test: 1, size: 16, seed: 1}")
    assert code == 0 and "trainA=3" in out and _snapshot(raw) != first
    # an empty folder (e.g. made by hand for the stage) is not a user's data
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli(capsys, "data", "fetch", "--set", f"data.raw_dir={empty}", *args[4:])[0] == 0


# --- 2. data import never follows links out of the source folder -------------------------------


def test_import_skips_and_lists_links_leaving_the_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = make_layout(tmp_path / "src", COUNTS)
    (src / "trainA" / "a.png").symlink_to("/etc/passwd")
    (src / "trainA" / "inside.png").symlink_to(src / "trainB" / "000.png")
    out = tmp_path / "out"
    code, stdout, _ = _cli(capsys, "data", "import", str(src), str(out))
    assert code == 0
    assert stdout.splitlines() == [
        f"imported {src} -> {out}: trainA=2, trainB=1, testA=1, testB=1; 1 entries left out:",
        "  trainA/a.png: symbolic link leaving the source folder (-> /etc/passwd); copy the "
        "file in instead",
    ]
    assert sorted(p.name for p in (out / "trainA").iterdir()) == ["000.png", "inside.png"]
    inside = out / "trainA" / "inside.png"
    assert not inside.is_symlink() and inside.read_bytes() == (src / "trainB/000.png").read_bytes()
    assert not any(p.is_symlink() for p in out.rglob("*"))

    # a split folder that is a link leaving the source is not followed either
    outside = make_layout(tmp_path / "elsewhere", {"testB": 1})
    (src / "testB").rename(tmp_path / "old-testB")
    (src / "testB").symlink_to(outside / "testB")
    code, _, err = _cli(capsys, "data", "import", str(src), str(tmp_path / "out2"))
    assert code == 2
    assert err == (
        f"error: {src}: no CycleGAN layout found: expected a folder with trainA/ trainB/ testA/ "
        f"testB/ at most 3 folder levels down. Found {src}: testB/ is a symbolic link leaving "
        "the source folder (not followed)\n"
    )
    assert not (tmp_path / "out2").exists()


# --- 6. zips Python cannot unpack: a clear message, exit 2, nothing written --------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "deflate64",
            "archive entry 'ds/testA/0.png' uses the compression method deflate64, which cannot "
            "be read here; re-pack it with standard deflate (e.g. `zip -r`) or as .tar.gz",
        ),
        (
            "password",
            "archive entry 'ds/testA/0.png' is password-protected (encrypted); unpack it with "
            "its password and import the folder, or re-pack it without a password",
        ),
        (
            "file-and-folder",
            "archive entry 'ds/trainA' is both a file and a folder, so the archive cannot be "
            "unpacked faithfully; re-pack it so that each path is one or the other.",
        ),
        (
            "empty",
            "the archive is empty (no entries); nothing to import. Check that it is the right "
            "file and re-pack the dataset folder into it.",
        ),
    ],
)
def test_unreadable_zips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, message: str
) -> None:
    archive = tmp_path / "ds.zip"
    if kind == "empty":
        zipfile.ZipFile(archive, "w").close()
    elif kind == "file-and-folder":
        _zip_layout(archive, {"ds/trainA": b"a file named like the folder"})
    else:
        _zip_layout(archive)
        _patch_zip(archive, **({"method": 9} if kind == "deflate64" else {"flags": 1}))
    code, out, err = _cli(capsys, "data", "import", str(archive), str(tmp_path / "new" / "out"))
    assert (code, out, err) == (2, "", f"error: {archive}: {message}\n")
    _assert_nothing_written(tmp_path, ["ds.zip"])  # no OUT, no new parent, no temp folder


def test_tar_clash_empty_and_bomb(tmp_path: Path) -> None:
    clash, empty = tmp_path / "clash.tar.gz", tmp_path / "empty.tar"
    with tarfile.open(clash, "w:gz") as tf:
        for name in ("ds/trainA", "ds/trainA/0.png"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    tarfile.open(empty, "w").close()
    with pytest.raises(DataError, match=r"clash\.tar\.gz: archive entry 'ds/trainA' is both a "):
        import_dataset(clash, tmp_path / "out")
    with pytest.raises(DataError, match=r"empty\.tar: the archive is empty \(no entries\)"):
        import_dataset(empty, tmp_path / "out")
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tf:
        info = tarfile.TarInfo("ds/trainA/zeros.bin")
        info.size = 8 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(DataError, match=r"bomb\.tar\.gz: the archive unpacks to 8\.0 MiB from "):
        import_dataset(bomb, tmp_path / "out")
    _assert_nothing_written(tmp_path, ["bomb.tar.gz", "clash.tar.gz", "empty.tar"])


# --- 7. an unwritable --json path: the summary is printed, then a clear error ------------------


def test_validate_json_to_a_folder_or_unwritable_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = make_layout(tmp_path / "ds", COUNTS)
    folder = tmp_path / "reports"
    folder.mkdir()
    code, out, err = _cli(capsys, "data", "validate", str(ds), "--json", str(folder))
    assert code == 2
    assert out.splitlines()[0] == f"dataset {ds}: OK"
    assert err.splitlines()[-1] == (
        f"error: cannot write the JSON report to {folder}: it is a folder; give a file path "
        f"such as {folder / 'report.json'}"
    )
    assert list(folder.iterdir()) == []
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    code, out, err = _cli(capsys, "data", "validate", str(ds), "--json", str(notes / "r.json"))
    assert code == 2 and out.startswith(f"dataset {ds}: OK\n")
    assert err.splitlines()[-1] == (
        f"error: cannot write the JSON report to {notes / 'r.json'}: {notes} is a file, not a "
        "folder; choose another path for --json"
    )
    assert notes.read_text() == "keep"


# --- 8. messages name the archive or URL and say what is wrong ---------------------------------


def test_messages_name_the_url_and_say_html_or_no_layout(
    tmp_path: Path, http_dir: tuple[str, Path]
) -> None:
    url, served = http_dir
    (served / "h2z.zip").write_text("<!DOCTYPE html>\n<html><body>Please sign in</body></html>\n")
    with pytest.raises(DataError) as e:
        import_dataset(f"{url}/h2z.zip", tmp_path / "out")
    assert str(e.value) == (
        f"{url}/h2z.zip: got an HTML page, not an archive (an error, login or download page?); "
        "check that the URL points to the .zip or .tar.gz file itself"
    )
    with zipfile.ZipFile(served / "flat.zip", "w") as zf:
        zf.writestr("photos/0.png", b"x")
    with pytest.raises(DataError) as e:
        import_dataset(f"{url}/flat.zip", tmp_path / "out")
    assert str(e.value) == (
        f"{url}/flat.zip: no CycleGAN layout found: expected a folder with trainA/ trainB/ "
        "testA/ testB/ at most 3 folder levels down"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served"]


def test_truncated_zip_and_too_deep_layout(tmp_path: Path) -> None:
    good = _zip_layout(tmp_path / "good.zip")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError) as e:
        import_dataset(cut, tmp_path / "out")
    assert str(e.value) == (
        f"{cut}: corrupt or truncated .zip archive (its end-of-archive directory is missing, as "
        "after an interrupted download or copy); download or copy it again"
    )
    with zipfile.ZipFile(tmp_path / "deep.zip", "w") as zf:
        for s in SPLITS:
            zf.writestr(f"a/b/c/ds/{s}/0.png", b"x")
    with pytest.raises(DataError) as e:
        import_dataset(tmp_path / "deep.zip", tmp_path / "out")
    assert str(e.value) == (
        f"{tmp_path / 'deep.zip'}: no CycleGAN layout found: expected a folder with trainA/ "
        f"trainB/ testA/ testB/ at most 3 folder levels down, but {tmp_path / 'deep.zip'}/a/b/c/"
        "ds holds one 4 levels down, deeper than the search depth of 3: import that folder "
        "directly (an archive: unpack it first, or re-pack it with the dataset folder nearer "
        "the top)"
    )
    assert ".import-work" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.zip", "deep.zip", "good.zip"]


# --- 9. layout hints: what was found and what to do --------------------------------------------


def test_layout_hints_in_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nested = make_layout(tmp_path / "nested" / "h2z", COUNTS).parent
    assert validate_dataset(nested, progress=False).errors == [
        f"no split folders in {nested}, but {nested / 'h2z'} holds trainA/ trainB/ testA/ "
        f"testB/: the dataset is nested one level too deep; point to {nested / 'h2z'} instead "
        "(the folder given to `data validate`, or data.raw_dir)"
    ]
    odd = make_layout(tmp_path / "odd", {"TrainA": 1, "testA": 1, "testB": 0})
    (odd / "trainB").write_bytes(b"not a folder")
    make_layout(odd / "testB", {"photos": 2})
    assert validate_dataset(odd, progress=False).errors == [
        "missing split folder trainA/: found TrainA/ instead of trainA/: split names are "
        "case-sensitive, rename it to trainA/",
        "missing split folder trainB/: trainB is a file, not a folder: it must be a folder of "
        "images (move the file away and put the trainB images in a folder trainB/)",
        "testB/ has no usable images; its sub-folders hold image files: testB/photos/ (2). "
        "Sub-folders of a split are not read: move the images up into testB/",
    ]
    code, _, err = _cli(capsys, "preprocess", "--set", f"data.raw_dir={odd / 'trainB'}")
    assert (code, err) == (
        2,
        f"error: preprocess: data.raw_dir {odd / 'trainB'} is a file, not a folder; point "
        "data.raw_dir at the dataset folder (import an archive first: cyclegan data import "
        "ARCHIVE OUT)\n",
    )
    code, _, err = _cli(capsys, "data", "validate", str(odd / "testA" / "000.png"))
    assert code == 2
    assert err == (
        f"error: {odd / 'testA' / '000.png'} is a file, not a dataset folder: give the folder "
        f"holding trainA/ trainB/ testA/ testB/ (to check an archive, import it first: "
        f"cyclegan data import {odd / 'testA' / '000.png'} OUT)\n"
    )


def test_layout_hints_in_import(tmp_path: Path) -> None:
    src = make_layout(tmp_path / "src", {"TrainA": 1, "trainB": 1, "testA": 1, "testB": 1})
    with pytest.raises(DataError) as e:
        import_dataset(src, tmp_path / "new" / "out")
    assert str(e.value) == (
        f"{src}: no CycleGAN layout found: expected a folder with trainA/ trainB/ testA/ testB/ "
        f"at most 3 folder levels down. Found {src}: found TrainA/ instead of trainA/: split "
        "names are case-sensitive, rename it to trainA/"
    )
    (src / "TrainA").rename(src / "trainA")
    make_layout(src / "trainA", {"sub": 2})
    (src / "trainA" / "000.png").unlink()
    with pytest.raises(DataError) as e:
        import_dataset(src, tmp_path / "new" / "out")
    assert str(e.value) == (
        f"{src}/trainA/ holds no image files; its sub-folders hold image files: trainA/sub/ (2)."
        " Sub-folders of a split are not read: move the images up into trainA/"
    )
    flat = make_layout(tmp_path / "flat", {".": 2})
    with pytest.raises(DataError) as e:
        import_dataset(flat, tmp_path / "new" / "out")
    assert str(e.value) == (
        f"{flat}: no CycleGAN layout found: expected a folder with trainA/ trainB/ testA/ testB/ "
        "at most 3 folder levels down; it holds 2 image files directly: sort them into trainA/ "
        "and trainB/ (training images of each domain) and testA/ and testB/ (held-out test images)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat", "src"]  # 17: no new/ left


# --- 10. entries that are not read are listed with a reason ------------------------------------


def test_ignored_entries_are_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = make_layout(tmp_path / "ds", COUNTS)
    a = ds / "trainA"
    (a / "x.png").mkdir()
    (a / "broken.png").symlink_to(tmp_path / "gone.png")
    os.mkfifo(a / "pipe.png")
    (a / "dirlink").symlink_to(ds / "testA")
    reasons = {
        "trainA/broken.png": f"broken symbolic link (-> {tmp_path / 'gone.png'})",
        "trainA/dirlink": f"symbolic link to a folder (-> {ds / 'testA'}); only files directly "
        "in a split are read",
        "trainA/pipe.png": "special file (FIFO), not a regular file",
        "trainA/x.png": "a folder named like an image; only files directly in a split are read "
        "(sub-folders are not)",
    }
    report = validate_dataset(ds, progress=False)
    assert report.ok and report.counts["trainA"] == 1
    assert report.ignored == [{"path": k, "reason": v} for k, v in reasons.items()]
    assert report.to_dict()["ignored"] == report.ignored
    for k, v in reasons.items():
        assert f"  ignored {k}: {v}" in report.summary().splitlines()
    res = import_dataset(ds, tmp_path / "out")
    assert res.ignored == reasons
    assert sorted(p.name for p in (tmp_path / "out" / "trainA").iterdir()) == ["000.png"]


# --- 18. archive bombs -------------------------------------------------------------------------


def test_zip_bomb_is_refused_with_the_limit_and_how_to_raise_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = _zip_layout(
        tmp_path / "bomb.zip",
        {"ds/trainA/zeros.bin": bytes(64 << 20)},
        compression=zipfile.ZIP_DEFLATED,
        compresslevel=9,
    )
    size = bomb.stat().st_size
    assert 40_000 < size < 100_000  # ~80 KB on disk, 64 MiB unpacked
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "data", "import", str(bomb), str(out))
    assert code == 2
    ratio = (64 << 20) / size
    assert err == (
        f"error: {bomb}: the archive unpacks to 64.0 MiB from {size / 1024:.1f} KiB (ratio "
        f"{ratio:.0f}:1), above the limit of 200:1 (data.max_expansion_ratio); a decompression "
        "bomb? If you trust it, raise the limit in params.yaml or with "
        f"--set data.max_expansion_ratio={-(-(64 << 20) // size)}\n"
    )
    code, _, err = _cli(
        capsys, "data", "import", str(bomb), str(out), "--set", "data.max_extract_bytes=1000000"
    )
    assert code == 2 and re.search(
        r"unpacks to 64\.0 MiB, above the limit of 976\.6 KiB \(data\.max_extract_bytes\)\. If "
        r"you trust it and have the disk space, raise the limit in params\.yaml or with "
        rf"--set data\.max_extract_bytes={(64 << 20) + 4 * 9}$",  # + 4 fake 9-byte PNGs
        err.strip(),
    )
    _assert_nothing_written(tmp_path, ["bomb.zip"])
    code, _, err = _cli(
        capsys, "data", "import", str(bomb), str(out), "--set", "data.max_expansion_ratio=0.5"
    )
    assert (code, err) == (2, "error: data.max_expansion_ratio: must be >= 1, got 0.5\n")
    code, stdout, _ = _cli(
        capsys, "data", "import", str(bomb), str(out), "--set", "data.max_expansion_ratio=5000"
    )
    assert code == 0 and "trainA/zeros.bin: not an image file name (extension '.bin')" in stdout


def test_entry_larger_than_declared_is_cut_off() -> None:
    dst = io.BytesIO()
    with pytest.raises(DataError, match=r"^x\.zip: archive entry 'a\.png' unpacks to more bytes"):
        _copy_limited(io.BytesIO(b"y" * 20), dst, 10, "x.zip", "a.png")
    assert _copy_limited(io.BytesIO(b"y" * 10), io.BytesIO(), 10, "x.zip", "a.png") == 10
