"""What a job screens, and what its rows call each file.

Every file is known by its resolved path, so one file listed twice (relative and absolute, or
through ``..``) is one row. The ``path`` column is what the operator asks for: the path relative
to SRC (the default), the path as given, or a pseudonym, a keyed hash of the relative path that
carries no folder or file name. PACS exports often name folders by patient name, ID, accession
number or date; with the key file, whoever holds it can join the results back to the files.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from core.serving.errors import JobError
from core.serving.imaging import DICOM_MAGIC_OFFSET
from core.serving.settings import IMAGE_SUFFIXES

PATH_COLUMNS = ("relative", "as-given", "pseudonym")
KEY_BYTES = 32
PSEUDONYM_CHARS = 32  # 128 bits of the HMAC: no two files of any archive share one
KEY_NEEDED = ("--path-column pseudonym needs --key-file FILE (and only it does): the key that turns paths into "
              "pseudonyms; keep it to join the results back to the files")


@dataclass(frozen=True)
class Source:
    """One file to screen: its resolved path, and the path as the operator gave it."""

    path: Path
    given: str


@dataclass(frozen=True)
class Listing:
    """What a job screens, and how many files under SRC it leaves because they are no images."""

    sources: list[Source]
    not_images: int = 0


def _is_dicom_file(path: str) -> bool:
    """A DICOM without a suffix (PACS exports name files IM000001): its magic at byte 128."""
    try:
        with open(path, "rb") as handle:
            handle.seek(DICOM_MAGIC_OFFSET)
            return handle.read(4) == b"DICM"
    except OSError:
        return True  # unreadable: listed, so that its row says so


def _walk(src: Path) -> tuple[list[str], int]:
    """The image files under src (by suffix, or DICOM by content), sorted, and how many other files
    there are. A folder that cannot be read stops the job: its files would be skipped unseen."""
    unreadable: list[OSError] = []
    found, others = [], 0
    for folder, _, names in os.walk(src, onerror=unreadable.append):
        for name in names:
            path = os.path.join(folder, name)
            suffix = os.path.splitext(name)[1].lower()
            if suffix in IMAGE_SUFFIXES or (not suffix and _is_dicom_file(path)):
                found.append(path)
            else:
                others += 1
    if unreadable:
        raise JobError(f"{len(unreadable)} folder(s) under {src} cannot be read "
                       f"({unreadable[0].strerror or unreadable[0]}): fix their permissions, or name the files "
                       "in a --manifest")
    return sorted(found), others


def list_sources(src: Path, manifest: Path | None = None) -> Listing:
    """The image files under src (recursively, sorted; folders that are links are not entered), or the
    manifest's lines, relative to src or absolute (a manifest spares an archive whose listing is slow);
    each file once, however it is spelt."""
    others = 0
    if manifest is not None:
        try:
            lines = [line.strip() for line in manifest.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise JobError(f"cannot read the manifest {manifest}: {getattr(exc, 'strerror', None) or exc}") from None
        given = [str(src / line) if not Path(line).is_absolute() else line for line in lines if line]
    else:
        if not src.is_dir():
            raise JobError(f"{src} is not a folder: give the folder that holds the X-rays")
        given, others = _walk(src)
    unique: dict[Path, Source] = {}
    for text in given:
        path = Path(os.path.abspath(text)).resolve()  # a path listed twice, however spelt, is still one row
        unique.setdefault(path, Source(path, text))
    return Listing(list(unique.values()), others)


def manifest_digest(manifest: Path | None) -> str | None:
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest is not None else None


def load_key(path: Path, create: bool = False) -> bytes:
    """The pseudonym key in path; with create, made (random, readable by its owner only) when there
    is none yet. Never made otherwise: a mistyped key file would give pseudonyms no row has."""
    if not create and not path.is_file():
        raise JobError(f"no pseudonym key at {path}: give the key file the job was run with")
    try:
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(KEY_BYTES) + "\n")
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise JobError(f"{path} is not a pseudonym key (expected {2 * KEY_BYTES} hexadecimal digits)") from None
    except OSError as exc:
        raise JobError(f"cannot read or create the pseudonym key {path}: {exc.strerror or exc}") from None
    if len(key) != KEY_BYTES:
        raise JobError(f"{path} is not a pseudonym key (expected {2 * KEY_BYTES} hexadecimal digits)")
    return key


@dataclass(frozen=True)
class RowKeys:
    """What a job's rows call its files (picklable: Ray actors make no keys, the driver does)."""

    root: Path  # SRC, resolved
    mode: str = "relative"
    key: bytes | None = None  # the pseudonym key, for mode pseudonym
    given_root: str = ""  # SRC as typed: as-given rows spell it so

    def __post_init__(self):
        if self.mode not in PATH_COLUMNS:
            raise JobError(f"--path-column must be one of {', '.join(PATH_COLUMNS)}")
        if (self.mode == "pseudonym") != (self.key is not None):
            raise JobError(KEY_NEEDED)

    def relative(self, source: Source) -> str:
        """The path relative to SRC; a manifest's file outside SRC keeps its resolved path."""
        try:
            return source.path.relative_to(self.root).as_posix()
        except ValueError:
            return source.path.as_posix()

    def __call__(self, source: Source) -> str:
        if self.mode == "as-given":
            return source.given
        if self.mode == "pseudonym":
            return hmac.new(self.key, self.relative(source).encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_CHARS]
        return self.relative(source)

    @property
    def identity(self) -> dict:
        """What a resumed job must share: another key gives other pseudonyms, so every file twice."""
        fingerprint = hmac.new(self.key, b"key fingerprint", hashlib.sha256).hexdigest()[:16] if self.key else None
        # As given, SRC spelt another way (a/../a for a) would give every file a second row.
        spelling = self.given_root if self.mode == "as-given" else None
        return {"path_column": self.mode, "pseudonym_key": fingerprint, "source_as_given": spelling}
