"""The DVC ``data`` stage: put the configured dataset into ``cfg.data.raw_dir``.

``data.source: synth`` renders the embedded synthetic benchmark with ``data.synth`` params; any
other value is a folder, archive, ``s3://`` prefix, URL or official CycleGAN name for
:func:`import_dataset`. The raw folder is replaced as a whole (DVC owns it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cyclegan.config import Config
from cyclegan.data.importer import import_dataset
from cyclegan.data.synth import synthesize


@dataclass
class IngestResult:
    source: str
    raw_dir: Path
    counts: dict[str, int]

    def summary(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items())
        return f"data ({self.source}) -> {self.raw_dir}: {counts}"


def ingest(cfg: Config, progress: bool = True) -> IngestResult:
    """Synthesize or import into ``cfg.data.raw_dir`` (overwriting it)."""
    raw = Path(cfg.data.raw_dir)
    if cfg.data.source == "synth":
        s = cfg.data.synth
        res = synthesize(raw, s.train, s.test, s.size, s.seed, overwrite=True, progress=progress)
        return IngestResult("synth", raw, res.counts)
    imported = import_dataset(cfg.data.source, raw, overwrite=True)
    return IngestResult(cfg.data.source, raw, imported.counts)
