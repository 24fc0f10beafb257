"""The CycleGAN folder layout and what to tell a user whose folder does not quite match it.

Shared by import (which searches for the layout) and validation (which checks it), so a folder
nested one level too deep, a ``TrainA/``, a ``trainB`` file or images in a sub-folder of a split
get the same hint everywhere: what was found and what to do.
"""

from __future__ import annotations

from pathlib import Path

from cyclegan.data.io import is_image_name

REQUIRED_SPLITS = ("trainA", "trainB", "testA", "testB")
OPTIONAL_SPLITS = GT_SPLITS = ("testA_gt", "testB_gt")


def leaves(path: Path, root: Path | None) -> bool:
    """True when ``path`` is a link that resolves outside ``root`` (never followed)."""
    return root is not None and path.is_symlink() and not path.resolve().is_relative_to(root)


def split_problem(parent: Path, split: str, root: Path | None = None) -> str | None:
    """None when ``parent/split`` is a usable folder, else what is there instead and the fix."""
    p = parent / split
    if leaves(p, root):
        return f"{split}/ is a symbolic link leaving the source folder (not followed)"
    if p.is_dir():
        return None
    if p.exists() or p.is_symlink():
        return (
            f"{split} is a file, not a folder: it must be a folder of images "
            f"(move the file away and put the {split} images in a folder {split}/)"
        )
    case = sorted(c.name for c in parent.iterdir() if c.name.casefold() == split.casefold())
    if case:
        return (
            f"found {case[0]}/ instead of {split}/: split names are case-sensitive, "
            f"rename it to {split}/"
        )
    return f"missing {split}/"


def nested_layouts(root: Path, max_depth: int) -> list[tuple[Path, int]]:
    """Folders below ``root`` (at most ``max_depth`` levels) holding all four splits."""
    found: list[tuple[Path, int]] = []
    frontier = [root]
    for depth in range(max_depth + 1):
        nxt: list[Path] = []
        for d in frontier:
            try:
                subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink())
            except OSError:
                continue
            if depth and all((d / s).is_dir() for s in REQUIRED_SPLITS):
                found.append((d, depth))
            nxt += subs
        frontier = nxt
    return found


def subfolder_hint(split_dir: Path) -> str | None:
    """When a split holds no images itself but its sub-folders do: say where and what to do."""
    try:
        subs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return None
    held = [(s, sum(1 for f in s.iterdir() if f.is_file() and is_image_name(f))) for s in subs]
    held = [(s, n) for s, n in held if n]
    if not held:
        return None
    where = ", ".join(f"{split_dir.name}/{s.name}/ ({n})" for s, n in held[:5])
    return (
        f"its sub-folders hold image files: {where}. Sub-folders of a split are not read: "
        f"move the images up into {split_dir.name}/"
    )
