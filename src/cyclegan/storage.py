"""Getting bytes from where users keep them: local paths, ``s3://`` (boto3) and http(s) URLs.

The S3 endpoint comes from the standard ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``)
variable, so MinIO and other S3-compatible stores work without code changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

# Hidden work items beside an output, named after the process that owns them so a later run can
# tell a killed run's leftovers from a live writer's: ``.<name>.<pid>-<rand>.tmp`` (a file being
# written) and ``.<name>.staging-<pid>-<rand>`` (a folder being built). Names without a pid are
# what earlier versions wrote.
_OWNED = re.compile(
    r"^\..+\.(?:staging-(?P<dir>\d+)-[a-z0-9_]{8}|(?P<file>\d+)-[a-z0-9_]{8}\.tmp)$"
)
_LEGACY = re.compile(  # only the extensions this project writes: never a user's own `.x.y.tmp`
    r"^\..+\.(?:staging-[a-z0-9_]{8}|(?:pt|onnx|json|jsonl|csv|html|png|txt)\.[a-z0-9_]{8}\.tmp)$"
)


class StorageError(RuntimeError):
    """A remote object could not be fetched; the message says what, where and how to fix it."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _started(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), or None when it does not exist."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:  # exists, but we may not look at it: treat as alive since forever
        return 0.0


def _newest_mtime(path: Path) -> float:
    """The newest mtime of ``path`` and, for a folder, of what it holds (a live writer's mark)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


def _is_stale(path: Path) -> bool:
    """Left by a process that is gone: its pid is dead, or reused by a process that started
    after the item was last touched. Legacy names (no pid) count as stale when nothing in them
    changed since this process started."""
    m = _OWNED.match(path.name)
    if m:
        started = _started(int(m.group("dir") or m.group("file")))
        return started is None or _newest_mtime(path) < started
    if _LEGACY.match(path.name):
        started = _started(os.getpid())
        return started is not None and _newest_mtime(path) < started
    return False


def clean_stale(folder: str | Path) -> list[Path]:
    """Remove the temp files and staging folders killed runs left in ``folder``; say so."""
    folder = Path(folder)
    removed = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(".")]
    except OSError:
        return []
    for path in entries:
        try:
            if not _is_stale(path):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:  # vanished meanwhile, or not ours to remove: leave it
            continue
        removed.append(path)
    if removed:
        log.warning(
            "removed %d stale temporary item(s) that killed runs left in %s: %s",
            len(removed),
            folder,
            ", ".join(sorted(p.name for p in removed)),
        )
    return removed


def temp_file(path: str | Path) -> str:
    """A new empty hidden file beside ``path`` (owned by this pid) after cleaning stale ones."""
    path = Path(path)
    clean_stale(path.parent)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp"
    )
    os.close(fd)
    return tmp


def staging_dir(out: str | Path) -> Path:
    """A new hidden folder beside ``out`` to build it in (owned by this pid), after cleaning
    stale ones; callers rename it to ``out`` when complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out.parent)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-{os.getpid()}-", dir=out.parent))


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a file that becomes ``path`` only when the block succeeds: readers never see half
    a file, and a crash leaves the previous version. Permissions follow the umask (not
    mkstemp's 0600), and the rename is fsync'ed so it survives a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_writer``)."""
    with atomic_writer(path) as f:
        f.write(data)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not uri.startswith("s3://"):
        raise StorageError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"S3 URI has no bucket: {uri!r} (expected s3://bucket/key)")
    return bucket, key


def s3_client() -> Any:
    """A boto3 S3 client honouring ``AWS_ENDPOINT_URL`` (MinIO, moto, Ceph...)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        config=BotoConfig(retries={"max_attempts": 3}, connect_timeout=5, read_timeout=60),
    )


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_settings() -> dict[str, str | None]:
    """Where S3 settings come from (the standard environment / profile), never the secrets."""
    import boto3

    creds = boto3.Session().get_credentials()
    return {
        "endpoint": s3_endpoint(),
        "mlflow_s3_endpoint": os.environ.get("MLFLOW_S3_ENDPOINT_URL"),
        "profile": os.environ.get("AWS_PROFILE"),
        "credentials": creds.method if creds is not None else None,
    }


_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}


def _why(err: Exception, bucket: str, key: str = "") -> str:
    """One sentence for the usual S3 failures: endpoint, credentials, bucket, key."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    where = f"endpoint {s3_endpoint()}" if s3_endpoint() else "AWS default endpoint"
    if isinstance(err, EndpointConnectionError) or "Connect" in type(err).__name__:
        return f"S3 {where} is unreachable ({type(err).__name__}); check AWS_ENDPOINT_URL"
    if isinstance(err, NoCredentialsError):
        return (
            f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
            "AWS_PROFILE"
        )
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in _BAD_CREDENTIALS:
            return (
                f"S3 {where} rejected the credentials ({code}); check AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if code in ("NoSuchBucket", "404") and not key:
            return f"S3 bucket {bucket!r} does not exist at {where}; create it or fix the URI"
        if code in ("NoSuchKey", "404"):
            return f"no object s3://{bucket}/{key} at {where}"
        if code == "NoSuchBucket":
            return f"S3 bucket {bucket!r} does not exist at {where}; create it or fix the URI"
    return (
        f"{err}. Check the bucket/key, credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
        "and AWS_ENDPOINT_URL for MinIO."
    )


def _s3_error(uri: str, err: Exception) -> StorageError:
    bucket, key = parse_s3_uri(uri)
    return StorageError(f"cannot read {uri}: {_why(err, bucket, key)}")


def check_s3_access(uri: str, key_must_exist: bool = False) -> None:
    """Fail now, with the reason, when ``uri``'s bucket (or object) cannot be reached."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_uri(uri)
    client = s3_client()
    try:
        client.head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as e:
        raise StorageError(f"cannot use {uri}: {_why(e, bucket)}") from e
    if key_must_exist:
        try:
            client.head_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise StorageError(f"cannot use {uri}: {_why(e, bucket, key)}") from e


def check_s3_endpoint() -> None:
    """The endpoint answers and accepts the credentials (no bucket in mind)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3_client().list_buckets()
    except (BotoCoreError, ClientError) as e:
        raise StorageError(_why(e, "")) from e


def download_s3_file(uri: str, dest: str | Path) -> Path:
    """Download one object to ``dest`` atomically."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_uri(uri)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        s3_client().download_file(bucket, key, str(tmp))
    except (BotoCoreError, ClientError) as e:
        tmp.unlink(missing_ok=True)
        raise _s3_error(uri, e) from e
    os.replace(tmp, dest)
    return dest


def list_s3_prefix(uri: str) -> list[str]:
    """Keys under ``s3://bucket/prefix`` (recursively)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    keys: list[str] = []
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(uri, e) from e
    return keys


def download_url(url: str, dest: str | Path, timeout: float = 30.0) -> Path:
    """Stream an http(s) URL to ``dest`` atomically, with a clear error when offline."""
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with requests.get(url, stream=True, timeout=timeout) as r:
            r.raise_for_status()
            with open(tmp, "wb") as f:
                shutil.copyfileobj(r.raw, f)
    except requests.RequestException as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(
            f"cannot download {url}: {e}. If this machine is offline, download the file "
            "elsewhere and pass its local path instead."
        ) from e
    os.replace(tmp, dest)
    return dest
