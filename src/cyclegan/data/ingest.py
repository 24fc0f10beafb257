"""The DVC ``data`` stage: put the configured dataset into ``cfg.data.raw_dir``.

``data.source: synth`` renders the embedded synthetic benchmark with ``data.synth`` params; any
other value is a folder, archive, ``s3://`` prefix, URL or official CycleGAN name for
:func:`import_dataset`.

The raw folder is replaced as a whole only when it is this stage's own earlier output: each
output carries a mark file (:data:`MARK`), written into the staged folder before it is
published. A non-empty folder without the mark is a user's folder and is refused unless
``overwrite``. ``dvc.yaml`` declares ``data/raw`` with ``persist: true`` so that ``dvc repro``
does not delete the folder itself before this check runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cyclegan.config import Config
from cyclegan.data.errors import DataError
from cyclegan.data.importer import import_dataset
from cyclegan.data.synth import synthesize

MARK = ".cyclegan-fetch.json"


@dataclass
class IngestResult:
    source: str
    raw_dir: Path
    counts: dict[str, int]

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return f"data ({self.source}) -> {self.raw_dir}: {counts}"


def _may_replace(raw: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``raw`` that this stage did not write (a user's own folder)."""
    if overwrite or not raw.is_dir() or (raw / MARK).is_file() or not any(raw.iterdir()):
        return
    raise DataError(
        f"{raw} (data.raw_dir) already holds files that `cyclegan data fetch` did not write; "
        "refusing to replace them. Move them elsewhere (or point data.source at them to "
        "import them), or pass --overwrite to replace the folder (under `dvc repro`: move or "
        "delete it first)."
    )


def ingest(cfg: Config, progress: bool = True, overwrite: bool = False) -> IngestResult:
    """Synthesize or import into ``cfg.data.raw_dir``, replacing only this stage's own output."""
    raw = Path(cfg.data.raw_dir)
    _may_replace(raw, overwrite)
    mark = json.dumps({"written_by": "cyclegan data fetch", "source": cfg.data.source}) + "\n"

    def finish(stage: Path) -> None:
        (stage / MARK).write_text(mark)

    if cfg.data.source == "synth":
        s = cfg.data.synth
        res = synthesize(
            raw, s.train, s.test, s.size, s.seed, overwrite=True, progress=progress, finish=finish
        )
        return IngestResult("synth", raw, res.counts)
    imported = import_dataset(cfg.data.source, raw, overwrite=True, cfg=cfg.data, finish=finish)
    return IngestResult(cfg.data.source, raw, imported.counts)
