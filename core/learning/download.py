"""Fetch the public Kermany chest X-ray set into the Kaggle folder layout.

Source: the TFRecords that keras.io's "Pneumonia Classification on TPU" reads
from TensorFlow's public storage: per split, ``images.tfrec`` (JPEG bytes) and
``paths.tfrec`` (the original relative paths, which carry class and patient).
Downloads resume from a ``.part`` file; each file's size is checked against
the server's, every record's CRC by TensorFlow, and every image must decode.
"""
from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.analysis.data import CLASS_NAMES
from core.serving.imaging import ImageError, decode_image

DEFAULT_BASE_URL = "https://storage.googleapis.com/download.tensorflow.org/data/ChestXRay2017"
SPLITS = ("train", "test")
FILES = ("images.tfrec", "paths.tfrec")
CHUNK = 1 << 20
TIMEOUT_S = 60

# progress(done_bytes, total_bytes, label)
Progress = Callable[[int, int, str], None]


class DownloadError(RuntimeError):
    pass


@dataclass
class DownloadSummary:
    dest: Path
    counts: dict[str, dict[str, int]]
    skipped: int


def fetch(url: str, target: Path, progress: Progress | None = None) -> Path:
    """Download url to target, resuming a previous ``.part`` and checking the size."""
    if target.exists():
        return target
    part = target.with_suffix(target.suffix + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the part is complete
            part.rename(target)
            return target
        raise DownloadError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    with response:
        if response.status != 206:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else -1
        with open(part, "ab" if have else "wb") as handle:
            done = have
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total, target.name)
    if total >= 0 and part.stat().st_size != total:
        raise DownloadError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
    part.rename(target)
    return target


def _class_of(original_path: str) -> str | None:
    parts = original_path.replace("\\", "/").split("/")
    return next((p for p in reversed(parts[:-1]) if p in CLASS_NAMES), None)


def extract(images: Path, paths: Path, out: Path) -> tuple[dict[str, int], int]:
    """Write each record's JPEG under out/<CLASS>/<original name>; returns counts and skipped."""
    import tensorflow as tf

    counts = {name: 0 for name in CLASS_NAMES}
    skipped = 0
    try:
        for image, path in zip(tf.data.TFRecordDataset(str(images)), tf.data.TFRecordDataset(str(paths))):
            original = path.numpy().decode("utf-8", "replace")
            label = _class_of(original)
            data = image.numpy()
            try:
                decode_image(data)
            except ImageError:
                label = None
            if label is None:
                skipped += 1
                continue
            target = out / label / os.path.basename(original)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            counts[label] += 1
    except tf.errors.DataLossError as exc:  # a CRC mismatch: the file is damaged
        raise DownloadError(f"{images.name} is corrupt ({exc.message}); delete it and run again") from exc
    return counts, skipped


def download(dest: str | Path, base_url: str = DEFAULT_BASE_URL, splits=SPLITS,
             progress: Progress | None = None) -> DownloadSummary:
    """Fetch, verify and unpack each split into dest/chest_xray/<split>/<CLASS>/."""
    dest = Path(dest)
    cache = dest / ".download"
    counts, skipped = {}, 0
    for split in splits:
        folder = cache / split
        folder.mkdir(parents=True, exist_ok=True)
        fetched = [fetch(f"{base_url.rstrip('/')}/{split}/{name}", folder / name, progress) for name in FILES]
        out = dest / "chest_xray" / split
        staging = out.with_name(split + ".incomplete")
        shutil.rmtree(staging, ignore_errors=True)
        counts[split], split_skipped = extract(*fetched, staging)
        skipped += split_skipped
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)  # a split appears whole or not at all
    return DownloadSummary(dest, counts, skipped)
