"""cyclegan.data.importer: folders, archives, S3 and HTTP in; only the canonical layout out."""

from __future__ import annotations

import io
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from cyclegan.cli import main
from cyclegan.data.errors import DataError
from cyclegan.data.importer import OFFICIAL_DATASETS, import_dataset, resolve_source
from tests.data_factory import make_layout

CANONICAL = ["testA", "testB", "trainA", "trainB"]


def _wrapped(tmp_path: Path, gt: bool = False) -> Path:
    """``src/horse2zebra/{trainA,...}`` plus the junk real archives carry."""
    src = tmp_path / "src"
    root = make_layout(src / "horse2zebra", {"trainA": 2, "trainB": 3, "testA": 1, "testB": 1})
    if gt:
        make_layout(root, {"testA_gt": 1, "testB_gt": 1}, seed=5)
    (root / "trainA" / "notes.txt").write_text("not an image")
    (root / "trainA" / ".DS_Store").write_bytes(b"\0")
    (root / "README.md").write_text("readme")
    (src / "__MACOSX" / "horse2zebra" / "trainA").mkdir(parents=True)
    return src


def _listing(root: Path) -> dict[str, list[str]]:
    return {d.name: sorted(p.name for p in d.iterdir()) for d in sorted(root.iterdir())}


EXPECTED = {
    "testA": ["000.png"],
    "testB": ["000.png"],
    "trainA": ["000.png", "001.png"],
    "trainB": ["000.png", "001.png", "002.png"],
}


def _zip(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())
    return dest


def test_local_folder_with_wrapper_and_junk(tmp_path: Path) -> None:
    src = _wrapped(tmp_path, gt=True)
    res = import_dataset(src, tmp_path / "out")
    gt = {"testA_gt": ["000.png"], "testB_gt": ["000.png"]}
    assert _listing(tmp_path / "out") == {**EXPECTED, **gt}
    assert res.counts["trainB"] == 3
    assert res.ignored == {"trainA/notes.txt": "not an image file name (extension '.txt')"}
    assert res.summary().splitlines()[1:] == [
        "  trainA/notes.txt: not an image file name (extension '.txt')"
    ]
    assert "; 1 entries left out:" in res.summary()
    assert (tmp_path / "out" / "trainA" / "001.png").read_bytes() == (
        src / "horse2zebra" / "trainA" / "001.png"
    ).read_bytes()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archives(tmp_path: Path, kind: str) -> None:
    src = _wrapped(tmp_path)
    archive = tmp_path / f"h2z.{kind}"
    if kind == "zip":
        _zip(src, archive)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(src / "horse2zebra", arcname="horse2zebra")
    import_dataset(archive, tmp_path / "out")
    assert _listing(tmp_path / "out") == EXPECTED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h2z." + kind, "out", "src"]


def _evil_zip(path: Path, name: str, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data/trainA/ok.png", b"x")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, b"/etc/passwd" if symlink else b"evil")
    return path


@pytest.mark.parametrize(
    ("name", "symlink", "why"),
    [
        ("data/../../evil.png", False, "path traversal"),
        ("/tmp/evil.png", False, "absolute path"),
        ("data/trainA/link.png", True, "symbolic link"),
    ],
)
def test_zip_entries_escaping_out_are_refused(
    tmp_path: Path, name: str, symlink: bool, why: str
) -> None:
    archive = _evil_zip(tmp_path / "evil.zip", name, symlink)
    with pytest.raises(
        DataError,
        match=rf"evil\.zip: archive entry '{name}' escapes the output folder \({why}\); refusing "
        r"to import it\. Re-pack the archive with plain relative paths\.",
    ):
        import_dataset(archive, tmp_path / "work" / "out")
    assert not (tmp_path / "work").exists()  # nothing extracted, no OUT, no new parent
    assert not (tmp_path / "evil.png").exists()


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("data/trainA/ok.png")
        ok.size = 1
        tf.addfile(ok, io.BytesIO(b"x"))
        tf.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize(
    ("name", "kind", "why"),
    [
        ("../evil.png", tarfile.REGTYPE, "path traversal"),
        ("/abs/evil.png", tarfile.REGTYPE, "absolute path"),
        ("data/trainA/link.png", tarfile.SYMTYPE, "symbolic link"),
        ("data/trainA/hard.png", tarfile.LNKTYPE, "hard link"),
        ("data/trainA/fifo.png", tarfile.FIFOTYPE, "special file"),
    ],
)
def test_tar_entries_escaping_out_are_refused(
    tmp_path: Path, name: str, kind: bytes, why: str
) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    data = b""
    if kind == tarfile.REGTYPE:
        data = b"evil"
        member.size = len(data)
    else:
        member.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path / "evil.tar.gz", member, data)
    msg = rf"archive entry '{name}' escapes the output folder \({why}\)"
    with pytest.raises(DataError, match=msg):
        import_dataset(archive, tmp_path / "work" / "out")
    assert not (tmp_path / "work").exists()


def test_overwrite_rules(tmp_path: Path) -> None:
    src = _wrapped(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    msg = r"out already exists and is not empty; pass overwrite=True"
    with pytest.raises(DataError, match=msg):
        import_dataset(src, out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep me"
    import_dataset(src, out, overwrite=True)
    assert _listing(out) == EXPECTED and not (out / "mine.txt").exists()


def test_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"dataset source not found: '.*missing' is not an existing folder or archive, an "
        r"s3:// URI, an http\(s\) URL or an official CycleGAN dataset name \(apple2orange, ",
    ):
        import_dataset(tmp_path / "missing", tmp_path / "out")
    partial = make_layout(tmp_path / "partial", {"trainA": 1, "trainB": 1})
    with pytest.raises(
        DataError,
        match=r"partial: no CycleGAN layout found: expected a folder with trainA/ trainB/ testA/ "
        r"testB/ at most 3 folder levels down\. Found .*partial: missing testA/; missing testB/$",
    ):
        import_dataset(partial, tmp_path / "out")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match=r"broken\.zip: corrupt or truncated \.zip archive"):
        import_dataset(tmp_path / "broken.zip", tmp_path / "out")
    two = tmp_path / "two"
    make_layout(two / "x")
    make_layout(two / "y")
    with pytest.raises(DataError, match=r"two: several CycleGAN layouts found \(.*x, .*y\)"):
        import_dataset(two, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_official_names_resolve() -> None:
    assert len(OFFICIAL_DATASETS) == 12
    assert resolve_source("horse2zebra") == (
        "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/horse2zebra.zip"
    )
    assert resolve_source("summer2winter_yosemite").endswith("/summer2winter_yosemite.zip")
    assert resolve_source("my/folder") == "my/folder"


def test_s3_prefix_and_archive(tmp_path: Path, s3_env: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="datasets")
    src = _wrapped(tmp_path)
    for p in sorted(src.rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), "datasets", f"cyclegan/{p.relative_to(src).as_posix()}")
    res = import_dataset("s3://datasets/cyclegan", tmp_path / "out")
    assert _listing(tmp_path / "out") == EXPECTED and res.counts["trainB"] == 3
    s3.upload_file(str(_zip(src, tmp_path / "h2z.zip")), "datasets", "archives/h2z.zip")
    import_dataset("s3://datasets/archives/h2z.zip", tmp_path / "out2")
    assert _listing(tmp_path / "out2") == EXPECTED
    msg = r"no objects under s3://datasets/nothing; check the bucket"
    with pytest.raises(DataError, match=msg):
        import_dataset("s3://datasets/nothing", tmp_path / "out3")
    s3.put_object(Bucket="datasets", Key="clash/x", Body=b"a file")
    s3.put_object(Bucket="datasets", Key="clash/x/y.png", Body=b"and a folder")
    msg = r"^s3://datasets/clash/x is both an object and a prefix \(folder\); move one of them"
    with pytest.raises(DataError, match=msg):
        import_dataset("s3://datasets/clash", tmp_path / "out3")
    msg = r"cannot fetch dataset 's3://no-such-bucket/x': cannot read"
    with pytest.raises(DataError, match=msg):
        import_dataset("s3://no-such-bucket/x", tmp_path / "out3")
    assert not (tmp_path / "out3").exists()


def test_http_url_and_offline_error(tmp_path: Path, http_dir: tuple[str, Path]) -> None:
    url, served = http_dir
    _zip(_wrapped(tmp_path), served / "h2z.zip")
    import_dataset(f"{url}/h2z.zip", tmp_path / "out")
    assert _listing(tmp_path / "out") == EXPECTED
    with pytest.raises(DataError, match=r"cannot fetch dataset .*/missing\.zip.*404"):
        import_dataset(f"{url}/missing.zip", tmp_path / "out2")
    with pytest.raises(
        DataError,
        match=r"cannot fetch dataset 'http://127\.0\.0\.1:1/x\.zip': cannot download .* If this "
        r"machine is offline, download the file elsewhere and pass its local path instead\.",
    ):
        import_dataset("http://127.0.0.1:1/x.zip", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _wrapped(tmp_path)
    assert main(["data", "import", str(src), str(tmp_path / "out")]) == 0
    assert "trainA=2, trainB=3, testA=1, testB=1" in capsys.readouterr().out
    assert main(["data", "import", str(src), str(tmp_path / "out")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(["data", "import", str(src), str(tmp_path / "out"), "--overwrite"]) == 0
    shutil.rmtree(src / "horse2zebra" / "testB")
    assert main(["data", "import", str(src), str(tmp_path / "o2")]) == 2
    assert "src/horse2zebra: missing testB/" in capsys.readouterr().err
