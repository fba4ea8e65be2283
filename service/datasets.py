"""Dataset files: a zip in image-folder layout (``<label>/<file>``), or CSV/JSON Lines with
``input,label`` columns. Everything here reads untrusted bytes and either returns labeled raw
inputs or raises :class:`DatasetError` saying what to fix; nothing is stored by this module.

A zip is checked from its central directory before a single member is extracted: entry count,
declared uncompressed sizes (zip bombs), paths (``..``, absolute), symlinks, encryption and nested
archives. Members are then read with their declared size as a hard cap (``zipfile`` never returns
more than the declared size and checks the CRC), so a lying directory cannot expand further.
"""

from __future__ import annotations

import csv
import io
import json
import stat
import struct
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO, Any, ClassVar, Literal

Kind = Literal["zip", "csv", "jsonl"]
MAX_LABEL_CHARS = 8192  # a file row's label as read (a completion may be long); label names are checked later
# Structured labels (entity spans, an answer span, detection objects) in JSON Lines rows and detection zips: a row
# nests at most this deep (row object > label list > object > box list), and a label's compact JSON is at most
# STRUCTURED_JSON_CHARS characters (each kind then checks its stored form against STRUCTURED_LABEL_CHARS, 8,192).
STRUCTURED_DEPTH = 4
STRUCTURED_JSON_CHARS = 4 * 8192
ANNOTATION_FILES = ("annotations.jsonl", "labels.json")  # a detection zip's file name -> objects mapping
MAX_ANNOTATION_BYTES = 16 * 1024 * 1024

ARCHIVE_SUFFIXES = (".zip", ".jar", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".lz", ".lzma", ".cab")
# Magic bytes of archive and compressed formats: zip, gzip, bzip2, xz, zstd, 7z, rar.
ARCHIVE_MAGIC = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"\x28\xb5\x2f\xfd",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
)


class DatasetError(ValueError):
    """A dataset file Graft will not take; ``code`` says why (service/api/errors.py maps it to a status)."""

    code: ClassVar[str] = "validation_error"


class DatasetTooLarge(DatasetError):
    """Past a size limit: rows, a field's characters, a member's or the whole zip's expanded bytes."""

    code: ClassVar[str] = "too_large"


class UnsupportedDataset(DatasetError):
    """Not a zip, CSV or JSON Lines file."""

    code: ClassVar[str] = "unsupported_media_type"


@dataclass
class Dataset:
    kind: Kind
    # image bytes (zip) or text (CSV/JSONL); JSON values for a structured-label kind's rows (read_structured)
    inputs: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)  # label strings; JSON values (read_structured)
    names: list[str] = field(default_factory=list)  # where each example came from, for error messages
    warnings: list[str] = field(default_factory=list)

    def add(self, value: Any, label: Any, name: str) -> None:
        self.inputs.append(value)
        self.labels.append(label)
        self.names.append(name)


def detect_kind(head: bytes, content_type: str, filename: str) -> Kind:
    """zip by its magic bytes; CSV or JSON Lines by content type or file name."""
    media = content_type.split(";")[0].strip().lower()
    suffix = PurePosixPath(filename.lower()).suffix
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if media in ("text/csv", "application/csv") or suffix == ".csv":
        return "csv"
    if media in (
        "application/jsonl",
        "application/x-ndjson",
        "application/x-jsonlines",
        "application/json-lines",
    ) or suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if media in ("application/zip", "application/x-zip-compressed") or suffix == ".zip":
        raise DatasetError("the upload claims to be a zip but is not one (no zip signature)")
    shown = media or "none"
    raise UnsupportedDataset(
        f"unsupported dataset type ({shown!r}, file {filename or 'unnamed'!r}); send a zip in image-folder layout "
        "(<label>/<file>), a CSV or a JSON Lines file with input,label columns",
    )


def _check_label(label: str, where: str) -> str:
    if not label.strip():
        raise DatasetError(f"{where}: the label is empty")
    if len(label) > MAX_LABEL_CHARS:
        raise DatasetError(f"{where}: the label is {len(label)} characters; the limit is {MAX_LABEL_CHARS}")
    return label


# -- zip, image-folder layout --------------------------------------------------------------------


CENTRAL_ENTRY_MIN_BYTES = 46  # a central-directory file header without name, extra field or comment


def _declared_entries(fh: IO[bytes]) -> int:
    """Most entries the zip can hold, read from its end-of-central-directory record before ``zipfile``
    parses the directory: the larger of the declared count and what the directory's declared size has
    room for (≥ 46 bytes per entry). ``zipfile`` keeps parsing until the directory's size is used up,
    so a zip declaring 1 entry in a 1 MB directory would yield 20,000. Zip64 archives say 0xFFFF /
    0xFFFFFFFF here (more than 65,534 entries or 4 GiB)."""
    fh.seek(0, io.SEEK_END)
    size = fh.tell()
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        raise DatasetError("the zip is damaged or truncated (no end-of-central-directory record)")
    fh.seek(0)
    count = struct.unpack("<H", tail[pos + 10 : pos + 12])[0]
    directory_bytes = struct.unpack("<I", tail[pos + 12 : pos + 16])[0]
    return max(count, directory_bytes // CENTRAL_ENTRY_MIN_BYTES)


def _parts(name: str) -> tuple[str, ...]:
    """The path components of a member, refusing anything that could leave the archive's root."""
    if "\x00" in name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise DatasetError(f"zip member {name!r} has an absolute, Windows-style or invalid path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise DatasetError(f"zip member {name!r} points outside the archive (path traversal with '..')")
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _ignored(parts: tuple[str, ...]) -> bool:
    """macOS resource forks and hidden files (``__MACOSX/``, ``.DS_Store``, ``._x.png``)."""
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


AUDIO_SUFFIXES = (".wav", ".wave")


def zip_modality(fh: IO[bytes], *, max_files: int) -> str:
    """The modality a zip's examples are for, from its member names (the central directory only, nothing
    extracted): ``audio`` when a visible member is a ``.wav`` file, else ``image``. Rewinds ``fh``."""
    if _declared_entries(fh) > max_files:
        raise DatasetError(f"the zip has more than {max_files} entries; the limit is {max_files} files per upload")
    try:
        with zipfile.ZipFile(fh) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise DatasetError("the upload is not a readable zip archive") from None
    finally:
        fh.seek(0)
    visible = (name for name in names if not any(p.startswith(".") or p == "__MACOSX" for p in name.split("/")))
    return "audio" if any(name.lower().endswith(AUDIO_SUFFIXES) for name in visible) else "image"


def _checked_members(
    archive: zipfile.ZipFile, *, max_files: int, max_file_bytes: int, what: str, annotations: bool = False
) -> tuple[list[tuple[tuple[str, ...], zipfile.ZipInfo]], set[tuple[str, ...]], int]:
    """The zip's files (path parts, entry), its folders and how many hidden entries were skipped, checked from
    the central directory alone: entry count, paths, links, encryption, nested archives, declared sizes (with
    ``annotations``, a detection zip's mapping file may be up to ``MAX_ANNOTATION_BYTES``)."""
    infos = archive.infolist()
    if len(infos) > max_files:
        raise DatasetError(f"the zip has {len(infos)} entries; the limit is {max_files} files per upload")
    folders: set[tuple[str, ...]] = set()
    files: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    skipped = 0
    for info in infos:
        parts = _parts(info.filename)
        if _is_symlink(info):
            raise DatasetError(f"zip member {info.filename!r} is a symbolic link; links are not accepted")
        if not parts:
            continue
        if _ignored(parts):
            skipped += 1
            continue
        if info.is_dir():
            folders.add(parts)
            continue
        if info.flag_bits & 0x1:
            raise DatasetError(f"zip member {info.filename!r} is encrypted")
        if parts[-1].lower().endswith(ARCHIVE_SUFFIXES):
            raise DatasetError(f"zip member {info.filename!r} is an archive; nested archives are not accepted")
        mapping = annotations and parts[-1] in ANNOTATION_FILES
        limit = MAX_ANNOTATION_BYTES if mapping else max_file_bytes
        if info.file_size > limit:
            shown = "annotations file" if mapping else what
            raise DatasetTooLarge(
                f"zip member {info.filename!r} expands to {info.file_size} bytes; the limit is {limit} "
                f"per {shown} (checked before extracting anything)",
            )
        files.append((parts, info))
        folders.update(parts[:i] for i in range(1, len(parts)))
    return files, folders, skipped


def _member_bytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """A member's bytes, at most its declared size (zipfile checks the CRC), refusing nested archives."""
    try:
        with archive.open(info) as member:
            data = member.read(cap + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
        raise DatasetError(f"zip member {info.filename!r} could not be extracted ({exc})") from None
    except NotImplementedError:
        raise DatasetError(f"zip member {info.filename!r} uses an unsupported compression method") from None
    if data.startswith(ARCHIVE_MAGIC) or data[257:262] == b"ustar":
        raise DatasetError(f"zip member {info.filename!r} is an archive; nested archives are not accepted")
    return data


def read_image_folder(
    fh: IO[bytes],
    *,
    max_files: int,
    max_total_bytes: int,
    max_file_bytes: int,
    convert: Callable[[bytes, str], str | bytes] | None = None,
    what: str = "image",
) -> Dataset:
    """Labeled images (or, with ``what="clip"``, audio clips) from a zip laid out as ``<label>/<file>``
    (optionally under one top folder).
    ``convert(data, where)`` turns each member's bytes into what is kept (default: the bytes), one
    member at a time, so the whole archive is never held extracted in memory."""
    if _declared_entries(fh) > max_files:
        raise DatasetError(f"the zip has more than {max_files} entries; the limit is {max_files} files per upload")
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise DatasetError("the upload is not a readable zip archive") from None
    with archive:
        dataset = Dataset("zip")
        files, folders, skipped = _checked_members(
            archive, max_files=max_files, max_file_bytes=max_file_bytes, what=what
        )
        total = sum(info.file_size for _, info in files)
        if total > max_total_bytes:
            raise DatasetTooLarge(
                f"the zip expands to {total} bytes; the limit is {max_total_bytes} (checked before extracting anything)"
            )

        # One wrapping folder (``dataset/<label>/<file>``) is stripped.
        roots = {parts[0] for parts, _ in files} | {f[0] for f in folders}
        depth = 2
        if len(roots) == 1 and files and all(len(parts) == 3 for parts, _ in files):
            depth = 3
        for parts, info in files:
            if len(parts) != depth:
                raise DatasetError(
                    f"zip member {info.filename!r} is not in image-folder layout: expected <label>/<file>, "
                    f"each {what} directly inside a folder named after its label",
                )
        if skipped:
            dataset.warnings.append(f"ignored {skipped} hidden or __MACOSX entries")

        by_label: dict[str, int] = defaultdict(int)
        for parts, info in sorted(files, key=lambda item: item[0]):
            label = _check_label(parts[-2], f"zip member {info.filename!r}")
            data = _member_bytes(archive, info, max_file_bytes)
            where = f"zip member {info.filename!r}"
            dataset.add(convert(data, where) if convert else data, label, where)
            by_label[label] += 1
        label_folders = {f[depth - 2] for f in folders if len(f) == depth - 1}
        for empty in sorted(label_folders - set(by_label)):
            dataset.warnings.append(f"label folder {empty!r} has no {what}s; ignored")
        if not dataset.inputs:
            raise DatasetError(f"the zip has no {what}s in folder-per-label layout (<label>/<file>)")
        return dataset


# -- CSV and JSON Lines ---------------------------------------------------------------------------


def _text_rows(fh: IO[bytes]) -> io.TextIOWrapper:
    return io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")


def read_table(fh: IO[bytes], kind: Literal["csv", "jsonl"], *, max_rows: int, max_field_chars: int) -> Dataset:
    """``(input, label)`` rows from CSV (a header naming ``input`` and ``label``) or JSON Lines
    (one ``{"input": ..., "label": ...}`` object per line). Blank lines are skipped."""
    dataset = Dataset(kind)
    text = _text_rows(fh)
    try:
        rows = _csv_rows(text, max_field_chars) if kind == "csv" else _jsonl_rows(text)
        for where, value, label in rows:
            if len(dataset.inputs) >= max_rows:
                raise DatasetTooLarge(f"the file has more than {max_rows} examples; the limit is {max_rows} per upload")
            if not isinstance(value, str) or not value.strip():
                raise DatasetError(f"{where}: 'input' must be a non-empty string")
            if len(value) > max_field_chars:
                raise DatasetTooLarge(f"{where}: 'input' is {len(value)} characters; the limit is {max_field_chars}")
            if not isinstance(label, str):
                raise DatasetError(f"{where}: 'label' must be a string")
            dataset.add(value, _check_label(label, where), where)
    except UnicodeDecodeError:
        raise DatasetError("the file is not UTF-8 text") from None
    finally:
        text.detach()
    if not dataset.inputs:
        raise DatasetError("the file has no examples")
    return dataset


def _csv_rows(text: io.TextIOWrapper, max_field_chars: int):  # type: ignore[no-untyped-def]
    csv.field_size_limit(max(csv.field_size_limit(), max_field_chars + 1))
    reader = csv.reader(text)
    try:
        header = next(reader, None)
        if header is None or "input" not in header or "label" not in header:
            raise DatasetError(f"the CSV header must name the columns 'input' and 'label' (got {header})")
        i_input, i_label = header.index("input"), header.index("label")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"CSV line {reader.line_num}"
            if len(row) != len(header):
                raise DatasetError(f"{where}: {len(row)} fields, but the header has {len(header)}")
            yield where, row[i_input], row[i_label]
    except csv.Error as exc:
        error = DatasetTooLarge if "field larger than field limit" in str(exc) else DatasetError
        raise error(f"CSV line {reader.line_num}: {exc}") from None


def _jsonl_rows(text: io.TextIOWrapper):  # type: ignore[no-untyped-def]
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        where = f"JSON Lines line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from None
        except RecursionError:  # the parser recurses per nesting level; a row is one flat object
            raise DatasetError(
                f'{where}: nested too deeply; each line must be one flat object {{"input": ..., "label": ...}}'
            ) from None
        if not isinstance(row, dict) or "input" not in row or "label" not in row:
            raise DatasetError(f"{where}: expected an object with 'input' and 'label'")
        yield where, row["input"], row["label"]


# -- structured labels: JSON Lines rows and detection zips -----------------------------------------


def json_depth(value: Any) -> int:
    """How deep a parsed JSON value nests (a scalar: 0, ``[]`` or ``{}``: 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _check_structured_label(label: Any, where: str, depth: int) -> None:
    """A structured label within the explicit bounds: nesting ``depth`` and ``STRUCTURED_JSON_CHARS``."""
    if json_depth(label) > depth:
        raise DatasetError(
            f"{where}: the label nests more than {depth} levels deep (spans, an answer span or objects "
            "{box, label} nest at most that deep)"
        )
    chars = len(json.dumps(label, ensure_ascii=False, separators=(",", ":")))
    if chars > STRUCTURED_JSON_CHARS:
        raise DatasetTooLarge(f"{where}: the label is {chars} characters as JSON; the limit is {STRUCTURED_JSON_CHARS}")


def read_structured(fh: IO[bytes], *, max_rows: int, max_field_chars: int) -> Dataset:
    """JSON Lines rows ``{"input": ..., "label": ...}`` whose label is a JSON structure (entity spans, an answer
    span or null, detection objects) and whose input is a string (a text, a base64 image) or an object (an
    answers task's ``{question, context}``). Only the shape's bounds are checked here: an input is a string or
    one flat object (at most ``max_field_chars`` characters), each row nests at most ``STRUCTURED_DEPTH`` levels
    and a label is at most ``STRUCTURED_JSON_CHARS`` characters of JSON; the task kind's own checks run on every
    row before anything is stored (service/application/datasets.py)."""
    dataset = Dataset("jsonl")
    text = _text_rows(fh)
    try:
        for where, value, label in _jsonl_rows(text):
            if len(dataset.inputs) >= max_rows:
                raise DatasetTooLarge(f"the file has more than {max_rows} examples; the limit is {max_rows} per upload")
            if json_depth(value) > 1:  # a string, or one flat object
                raise DatasetError(f"{where}: 'input' nests too deeply; it is a string or {{question, context}}")
            if isinstance(value, dict | list):
                size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
            else:
                size = len(value) if isinstance(value, str) else 0
            if size > max_field_chars:
                raise DatasetTooLarge(f"{where}: 'input' is {size} characters; the limit is {max_field_chars}")
            _check_structured_label(label, where, STRUCTURED_DEPTH - 1)
            dataset.add(value, label, where)
    except UnicodeDecodeError:
        raise DatasetError("the file is not UTF-8 text") from None
    finally:
        text.detach()
    if not dataset.inputs:
        raise DatasetError("the file has no examples")
    return dataset


def _annotations(data: bytes, name: str) -> dict[str, tuple[Any, str]]:
    """A detection zip's mapping, file name -> (objects, where): ``annotations.jsonl`` has one
    ``{"file": name, "label": [objects]}`` per line, ``labels.json`` one object ``{name: [objects]}``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{name} is not UTF-8 text") from None
    out: dict[str, tuple[Any, str]] = {}
    if name.endswith(".json"):
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{name}: not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise DatasetError(f"{name}: nested too deeply") from None
        if not isinstance(mapping, dict):
            raise DatasetError(f'{name} must be one object {{"<image file>": [{{"box": [x0, y0, x1, y1], "label"}}]}}')
        entries = [(f"{name} entry {key!r}", key, label) for key, label in mapping.items()]
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{name} line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{where}: not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise DatasetError(f"{where}: nested too deeply") from None
            if not isinstance(row, dict) or set(row) != {"file", "label"} or not isinstance(row["file"], str):
                raise DatasetError(f'{where}: expected an object {{"file": "<image file>", "label": [objects]}}')
            entries.append((where, row["file"], row["label"]))
    for where, key, label in entries:
        key = "/".join(p for p in key.split("/") if p not in ("", "."))
        if key in out:
            raise DatasetError(f"{where}: {key!r} is annotated twice")
        _check_structured_label(label, where, STRUCTURED_DEPTH - 1)
        out[key] = (label, where)
    return out


def read_annotated_images(
    fh: IO[bytes],
    *,
    max_files: int,
    max_total_bytes: int,
    max_file_bytes: int,
    convert: Callable[[bytes, Any, str], tuple[str, str]],
) -> Dataset:
    """Images labelled by one mapping file (a detection dataset): the zip holds images plus ``annotations.jsonl``
    or ``labels.json`` (see :func:`_annotations`) beside them, image names relative to the mapping file's
    folder. Checked from the central directory before anything is extracted (entry count, paths, links,
    declared sizes); every image must be annotated (``[]``: no object) and every annotation name an image.
    ``convert(data, label, where)`` checks one image and its objects and returns them as the store keeps them,
    one image at a time."""
    if _declared_entries(fh) > max_files:
        raise DatasetError(f"the zip has more than {max_files} entries; the limit is {max_files} files per upload")
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError):
        raise DatasetError("the upload is not a readable zip archive") from None
    with archive:
        files, _, skipped = _checked_members(
            archive, max_files=max_files, max_file_bytes=max_file_bytes, what="image", annotations=True
        )
        total = sum(info.file_size for _, info in files)
        if total > max_total_bytes:
            raise DatasetTooLarge(
                f"the zip expands to {total} bytes; the limit is {max_total_bytes} (checked before extracting anything)"
            )
        mappings = [(parts, info) for parts, info in files if parts[-1] in ANNOTATION_FILES]
        if len(mappings) != 1:
            found = [info.filename for _, info in mappings]
            raise DatasetError(
                f"a detection zip holds its images and exactly one {' or '.join(ANNOTATION_FILES)} mapping each "
                f"image's file name to its objects; found {found or 'none'}"
            )
        (map_parts, map_info) = mappings[0]
        root = map_parts[:-1]
        annotations = _annotations(_member_bytes(archive, map_info, MAX_ANNOTATION_BYTES), map_info.filename)
        images: dict[str, zipfile.ZipInfo] = {}
        for parts, info in files:
            if info is map_info:
                continue
            if parts[: len(root)] != root:
                raise DatasetError(f"zip member {info.filename!r} is not beside {map_info.filename!r} or below it")
            images["/".join(parts[len(root) :])] = info
        unknown = sorted(set(annotations) - set(images))
        if unknown:
            where = annotations[unknown[0]][1]
            raise DatasetError(f"{where}: no image {unknown[0]!r} in the zip ({len(unknown)} annotated images missing)")
        missing = sorted(set(images) - set(annotations))
        if missing:
            raise DatasetError(
                f"zip member {images[missing[0]].filename!r} has no entry in {map_info.filename} "
                f"({len(missing)} images unannotated; an image without objects takes [])"
            )
        dataset = Dataset("zip")
        if skipped:
            dataset.warnings.append(f"ignored {skipped} hidden or __MACOSX entries")
        for key in sorted(images):
            info = images[key]
            label, _ = annotations[key]
            where = f"zip member {info.filename!r}"
            stored, encoded = convert(_member_bytes(archive, info, max_file_bytes), label, where)
            dataset.add(stored, encoded, where)
        if not dataset.inputs:
            raise DatasetError(f"the zip has no images beside {map_info.filename}")
        return dataset
