"""Dataset files (service/datasets.py): image-folder zips, CSV, JSON Lines; every refusal."""

from __future__ import annotations

import io
import stat
import struct
import zipfile

import pytest

from service.api.errors import answer_for
from service.datasets import DatasetError, detect_kind, read_image_folder, read_table

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend image bytes"  # the zip reader does not decode images
LIMITS = {"max_files": 100, "max_total_bytes": 1_000_000, "max_file_bytes": 100_000}


def make_zip(entries: dict[str, bytes | None], **infos) -> io.BytesIO:
    """A zip of ``name → bytes`` (None for a directory entry)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            if data is None:
                zf.writestr(zipfile.ZipInfo(name.rstrip("/") + "/"), b"")
            else:
                info = zipfile.ZipInfo(name)
                for key, value in infos.get(name, {}).items():
                    setattr(info, key, value)
                zf.writestr(info, data, zipfile.ZIP_DEFLATED)
    out.seek(0)
    return out


def refuse(fh, status: int, fragment: str, **limits) -> None:
    with pytest.raises(DatasetError, match=fragment) as raised:
        read_image_folder(fh, **{**LIMITS, **limits})
    assert answer_for(raised.value).status == status


def test_image_folder_layout_with_warnings() -> None:
    fh = make_zip(
        {
            "cat/a.png": PNG,
            "cat/b.png": PNG + b"b",
            "dog/c.png": PNG + b"c",
            "empty/": None,  # an empty label folder: ignored, with a warning
            "__MACOSX/cat/._a.png": b"resource fork",
            "cat/.DS_Store": b"finder",
        }
    )
    data = read_image_folder(fh, **LIMITS)
    assert data.labels == ["cat", "cat", "dog"] and data.inputs[1] == PNG + b"b"
    assert data.names == ["zip member 'cat/a.png'", "zip member 'cat/b.png'", "zip member 'dog/c.png'"]
    assert any("'empty'" in w for w in data.warnings) and any("__MACOSX" in w for w in data.warnings)


def test_one_wrapping_folder_is_stripped() -> None:
    data = read_image_folder(make_zip({"digits/0/a.png": PNG, "digits/1/b.png": PNG, "digits/2/": None}), **LIMITS)
    assert data.labels == ["0", "1"] and any("'2'" in w for w in data.warnings)


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ({"../evil.png": PNG, "cat/a.png": PNG}, "path traversal"),
        ({"cat/../../evil.png": PNG}, "path traversal"),
        ({"/etc/cat/a.png": PNG}, "absolute"),
        ({"C:/cat/a.png": PNG}, "absolute"),
        ({"cat\\..\\a.png": PNG}, "Windows-style"),
        ({"cat/inner.zip": PNG}, "nested archives"),
        ({"cat/inner.tar.gz": PNG}, "nested archives"),
        ({"cat/disguised.png": make_zip({"x/y.png": PNG}).getvalue()}, "nested archives"),  # by content
        ({"cat/a.png": PNG, "loose.png": PNG}, "image-folder layout"),
        ({"a/b/c/d.png": PNG, "a/x/y.png": PNG}, "image-folder layout"),
        ({"empty/": None}, "no images"),
    ],
)
def test_refused_layouts(entries: dict, fragment: str) -> None:
    refuse(make_zip(entries), 422, fragment)


def test_symlinks_are_refused() -> None:
    link = {"external_attr": (stat.S_IFLNK | 0o777) << 16, "create_system": 3}
    refuse(make_zip({"cat/a.png": PNG, "cat/link.png": b"/etc/passwd"}, **{"cat/link.png": link}), 422, "symbolic link")


def test_too_many_files_is_refused_from_the_directory_record() -> None:
    refuse(make_zip({f"cat/{i}.png": PNG for i in range(11)}), 422, "more than 10 entries", max_files=10)


def test_a_zip_that_understates_its_entry_count_is_refused_before_zipfile_parses_it(monkeypatch) -> None:
    """The end record says 1 entry, the directory holds 20,000: ``zipfile`` would parse all of them
    (it reads until the directory's size is used up). The count is bounded from the directory's size
    (≥ 46 bytes per entry), so the zip is refused without ``zipfile`` ever opening it."""
    data = bytearray(make_zip({f"c/{i}": b"" for i in range(20_000)}).getvalue())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 1, 1)  # entries on this disk, entries in all
    assert len(zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()) == 20_000  # what zipfile would do

    def never(*args, **kwargs):
        raise AssertionError("zipfile parsed the directory")

    monkeypatch.setattr("service.datasets.zipfile.ZipFile", never)
    refuse(io.BytesIO(bytes(data)), 422, "more than 10000 entries", max_files=10_000)


def _lie_about_size(fh: io.BytesIO, size: int) -> io.BytesIO:
    """Rewrite the central directory so every member claims ``size`` uncompressed bytes."""
    data = bytearray(fh.getvalue())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        data[pos + 24 : pos + 28] = struct.pack("<I", size)
        pos = data.find(b"PK\x01\x02", pos + 4)
    return io.BytesIO(bytes(data))


def test_zip_bombs_are_refused_before_extracting_anything() -> None:
    # Real data: 2 × 600 kB of zeros compress to ~1 kB each; together over the 1 MB limit.
    bomb = make_zip({"cat/a.png": b"\x00" * 600_000, "dog/b.png": b"\x00" * 600_000})
    assert len(bomb.getvalue()) < 10_000
    refuse(bomb, 413, "expands to 1200000 bytes", max_file_bytes=1_000_000)
    # A directory that claims 4 GB per member: refused from the directory alone (its data is tiny and
    # would extract fine), so nothing was decompressed.
    refuse(_lie_about_size(make_zip({"cat/a.png": PNG}), 0xFFFFFFF0), 413, "expands to")


def test_one_member_over_the_image_limit() -> None:
    refuse(make_zip({"cat/a.png": PNG * 100, "dog/b.png": PNG}), 413, "limit is 1000 per image", max_file_bytes=1000)


def test_encrypted_members_are_refused() -> None:
    fh = make_zip({"cat/a.png": PNG, "dog/b.png": PNG})
    data = bytearray(fh.getvalue())
    pos = data.find(b"PK\x01\x02")
    data[pos + 8] |= 0x1  # general-purpose flag: encrypted
    refuse(io.BytesIO(bytes(data)), 422, "encrypted")


def test_not_a_zip() -> None:
    refuse(io.BytesIO(b"PK\x03\x04 but then garbage, no directory at all"), 422, "damaged or truncated")
    whole = make_zip({"cat/a.png": PNG}).getvalue()
    refuse(io.BytesIO(whole[: len(whole) - 30]), 422, "damaged or truncated")


# -- kinds, CSV, JSON Lines ------------------------------------------------------------------------


def test_detect_kind() -> None:
    assert detect_kind(b"PK\x03\x04abcd", "application/octet-stream", "") == "zip"
    assert detect_kind(b"input,la", "text/csv; charset=utf-8", "") == "csv"
    assert detect_kind(b'{"input"', "", "data.jsonl") == "jsonl"
    assert detect_kind(b'{"input"', "application/x-ndjson", "") == "jsonl"
    with pytest.raises(DatasetError, match="not one") as raised:
        detect_kind(b"GIF89a..", "application/zip", "")
    assert answer_for(raised.value).status == 422
    with pytest.raises(DatasetError, match="unsupported dataset type") as raised:
        detect_kind(b"GIF89a..", "image/gif", "cat.gif")
    assert answer_for(raised.value).status == 415


def table(text: str | bytes, kind: str = "csv", **limits):
    data = text.encode() if isinstance(text, str) else text
    return read_table(io.BytesIO(data), kind, **{"max_rows": 100, "max_field_chars": 1000, **limits})


def test_csv_and_jsonl() -> None:
    data = table('\ufeffid,label,input\n1,pos,"great, really"\n\n2,neg,"multi\nline"\n')
    assert data.inputs == ["great, really", "multi\nline"] and data.labels == ["pos", "neg"]
    assert data.names == ["CSV line 2", "CSV line 5"]
    data = table('{"input": "a", "label": "x"}\n\n{"input": "b", "label": "y", "extra": 1}\n', "jsonl")
    assert (data.inputs, data.labels, data.names) == (
        ["a", "b"],
        ["x", "y"],
        ["JSON Lines line 1", "JSON Lines line 3"],
    )


@pytest.mark.parametrize(
    ("text", "kind", "status", "fragment"),
    [
        ("text,category\na,b\n", "csv", 422, "'input' and 'label'"),
        ("input,label\na,b,c\n", "csv", 422, "CSV line 2: 3 fields"),
        ("input,label\n,b\n", "csv", 422, "CSV line 2: 'input' must be a non-empty string"),
        ("input,label\na,  \n", "csv", 422, "the label is empty"),
        ("input,label\n" + "x" * 1200 + ",b\n", "csv", 413, "1200 characters; the limit is 1000"),
        ("input,label\n" + "a,b\n" * 101, "csv", 413, "more than 100 examples"),
        ("input,label\n", "csv", 422, "no examples"),
        (b"input,label\n\xff\xfe,b\n", "csv", 422, "not UTF-8"),
        ('{"input": "a", "label": "x"}\n{"input": "b"', "jsonl", 422, "JSON Lines line 2: not valid JSON"),
        ('["a", "x"]\n', "jsonl", 422, "line 1: expected an object"),
        ('{"input": "a", "label": 3}\n', "jsonl", 422, "'label' must be a string"),
        ('{"input": 3, "label": "x"}\n', "jsonl", 422, "'input' must be a non-empty string"),
        ('{"input": "a", "label": "' + "l" * 8193 + '"}\n', "jsonl", 422, "the limit is 8192"),
        (
            '{"input": "a", "label": "x", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}\n",
            "jsonl",
            422,
            "line 1: nested too deeply",
        ),  # was RecursionError (500)
    ],
)
def test_table_refusals(text, kind: str, status: int, fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment) as raised:
        table(text, kind)
    assert answer_for(raised.value).status == status


def test_a_zip_of_wav_files_is_for_an_audio_task() -> None:
    from service.datasets import zip_modality

    wav = b"RIFF\x00\x00\x00\x00WAVE"  # the member names decide; nothing is extracted
    assert zip_modality(make_zip({"yes/0.wav": wav, "no/1.WAV": wav}), max_files=10) == "audio"
    assert zip_modality(make_zip({"cat/0.png": PNG, "__MACOSX/cat/._0.wav": b"x"}), max_files=10) == "image"
    fh = make_zip({"a/0.wav": wav})
    zip_modality(fh, max_files=10)
    assert fh.tell() == 0  # rewound for the reader
    with pytest.raises(DatasetError, match="more than 1 entries"):
        zip_modality(make_zip({"a/0.wav": wav, "b/1.wav": wav}), max_files=1)
    with pytest.raises(DatasetError, match="end-of-central-directory"):
        zip_modality(io.BytesIO(b"not a zip"), max_files=10)


# -- structured labels: entities, answers, detection -----------------------------------------------


def jsonl(*rows) -> io.BytesIO:
    import json

    return io.BytesIO("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode())


def structured(kind: str, *rows):
    """The file read and every row checked by the kind's own checks (as the upload route does)."""
    from adapters import kinds
    from service.application.datasets import check_rows
    from service.datasets import read_structured

    data = read_structured(jsonl(*rows), max_rows=100, max_field_chars=10_000)
    check_rows(kinds.kind_of(kind), data)
    return data


def refuse_rows(kind: str, fragment: str, *rows, status: int = 422) -> None:
    with pytest.raises(ValueError, match=fragment) as raised:
        structured(kind, *rows)
    assert answer_for(raised.value).status == status


def real_png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_entities_rows_good_and_bad() -> None:
    text = "Ada Lovelace met Charles Babbage in London"
    good = {"input": text, "label": [{"start": 0, "end": 12, "label": "PER"}, {"start": 35, "end": 41, "label": "LOC"}]}
    data = structured("entities", good, {"input": "nothing here", "label": []})
    assert data.labels[0][1]["label"] == "LOC" and data.labels[1] == [] and data.names[1] == "JSON Lines line 2"
    refuse_rows("entities", r"line 2: label: .*list of spans", good, {"input": text, "label": "PER"})
    refuse_rows("entities", r"line 1: label: .*overlap", {"input": text, "label": [good["label"][0]] * 2})
    refuse_rows(
        "entities", r"line 3: label: ", good, good, {"input": "short", "label": [{"start": 0, "end": 99, "label": "X"}]}
    )
    refuse_rows(
        "entities", r"line 1: input: .*one string per input", {"input": {"question": "q", "context": "c"}, "label": []}
    )


def test_answers_rows_good_and_bad() -> None:
    qc = {"question": "Who wrote it?", "context": "Ada wrote the notes."}
    data = structured("answers", {"input": qc, "label": {"start": 0, "end": 3}}, {"input": qc, "label": None})
    assert data.inputs[0] == qc and data.labels == [{"start": 0, "end": 3}, None]
    refuse_rows("answers", r"line 1: input: .*question.*context", {"input": "a text", "label": None})
    refuse_rows(
        "answers", r"line 2: label: .*start and end", {"input": qc, "label": None}, {"input": qc, "label": {"start": 0}}
    )
    refuse_rows("answers", r"line 1: label: ", {"input": qc, "label": {"start": 0, "end": 999}})


def test_detection_rows_good_and_bad() -> None:
    import base64

    image = base64.b64encode(real_png(40, 30)).decode()
    objects = [{"box": [1, 2, 20, 25], "label": "cat"}]
    data = structured("detection", {"input": image, "label": objects}, {"input": image, "label": []})
    assert data.labels == [objects, []]
    refuse_rows(
        "detection",
        r"line 1: label: .*past the image \(40×30",
        {"input": image, "label": [{"box": [0, 0, 41, 5], "label": "cat"}]},
    )
    refuse_rows(
        "detection",
        r"line 2: label: .*x1 > x0",
        {"input": image, "label": []},
        {"input": image, "label": [{"box": [5, 5, 1, 9], "label": "c"}]},
    )
    refuse_rows(
        "detection", r"line 1: label: .*exactly box and label", {"input": image, "label": [{"box": [0, 0, 1, 1]}]}
    )


def test_structured_rows_are_bounded_in_depth_and_size() -> None:
    from service.datasets import STRUCTURED_JSON_CHARS, json_depth

    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth([{"box": [1]}]) == 3
    deep = {"input": "text", "label": [{"start": 0, "end": 1, "label": [[["x"]]]}]}
    refuse_rows("entities", r"JSON Lines line 1: the label nests more than 3 levels", deep)
    deep_input = {"input": {"question": {"a": ["b"]}, "context": "c"}, "label": None}
    refuse_rows("answers", r"line 1: 'input' nests too deeply", deep_input)
    big = {"input": "t" * 50, "label": [{"start": 0, "end": 1, "label": "L" * STRUCTURED_JSON_CHARS}]}
    refuse_rows("entities", r"line 1: the label is \d+ characters as JSON", big, status=413)
    refuse_rows("entities", r"line 1: nested too deeply", "[" * 100_000 + "]" * 100_000)
    many = [{"input": "a", "label": []}] * 101
    refuse_rows("entities", r"more than 100 examples", *many, status=413)
    # the string-label reader is unchanged: a structured label is still refused there
    with pytest.raises(DatasetError, match="'label' must be a string"):
        read_table(
            jsonl({"input": "x", "label": [{"start": 0, "end": 1, "label": "A"}]}),
            "jsonl",
            max_rows=10,
            max_field_chars=100,
        )


def annotated(entries: dict[str, bytes | None], **limits):
    """A detection zip read with a convert that keeps (bytes, label) as they are."""
    from service.datasets import read_annotated_images

    return read_annotated_images(
        make_zip(entries),
        **{**LIMITS, **limits},
        convert=lambda raw, label, where: (raw, label),  # type: ignore[arg-type]
    )


def test_detection_zip_good() -> None:
    import json

    png = real_png(10, 10)
    lines = [{"file": "a.png", "label": [{"box": [0, 0, 5, 5], "label": "x"}]}, {"file": "sub/b.png", "label": []}]
    mapping = "\n".join(json.dumps(line) for line in lines).encode()
    data = annotated({"set/annotations.jsonl": mapping, "set/a.png": png, "set/sub/b.png": png, "set/.DS_Store": b"x"})
    assert data.names == ["zip member 'set/a.png'", "zip member 'set/sub/b.png'"]
    assert data.labels == [lines[0]["label"], []] and data.inputs == [png, png]
    assert data.warnings == ["ignored 1 hidden or __MACOSX entries"]
    as_json = annotated({"labels.json": json.dumps({"a.png": []}).encode(), "a.png": png})
    assert as_json.labels == [[]]


def test_detection_zip_refusals() -> None:
    import json

    from service.datasets import read_annotated_images

    png = real_png(10, 10)
    one = json.dumps({"file": "a.png", "label": []}).encode()
    cases = [
        ({"a.png": png}, "exactly one annotations.jsonl or labels.json", {}),
        ({"annotations.jsonl": one, "labels.json": b"{}", "a.png": png}, "exactly one", {}),
        ({"annotations.jsonl": one, "a.png": png, "b.png": png}, "'b.png' has no entry in annotations.jsonl", {}),
        ({"annotations.jsonl": one + b"\n" + one, "a.png": png}, "line 2: 'a.png' is annotated twice", {}),
        (
            {"annotations.jsonl": json.dumps({"file": "c.png", "label": []}).encode(), "a.png": png},
            "no image 'c.png'",
            {},
        ),
        ({"annotations.jsonl": b'{"file": "a.png"}', "a.png": png}, "line 1: expected an object", {}),
        ({"annotations.jsonl": b"not json", "a.png": png}, "line 1: not valid JSON", {}),
        ({"labels.json": b"[]", "a.png": png}, "must be one object", {}),
        ({"x/annotations.jsonl": one, "a.png": png}, "is not beside", {}),
        (
            {"annotations.jsonl": json.dumps({"file": "a.png", "label": [[[[1]]]]}).encode(), "a.png": png},
            "nests more than 3",
            {},
        ),
        ({"annotations.jsonl": one, "a.png": png, "b.zip": b"PK"}, "nested archives", {}),
        ({"annotations.jsonl": one, "a.png": png}, "more than 1 entries", {"max_files": 1}),
        ({"annotations.jsonl": one, "a.png": png}, "per image", {"max_file_bytes": 10}),
        ({"annotations.jsonl": one, "a.png": png}, "the zip expands to", {"max_total_bytes": 50}),
        ({"annotations.jsonl": one, "../a.png": png}, "path traversal", {}),
    ]
    for entries, fragment, limits in cases:
        with pytest.raises(DatasetError, match=fragment):
            annotated(entries, **limits)
    with pytest.raises(DatasetError, match="damaged or truncated"):
        read_annotated_images(io.BytesIO(b"PK\x03\x04 truncated"), **LIMITS, convert=lambda raw, label, where: ("", ""))


def test_the_client_zips_a_detection_folder_with_its_annotations(tmp_path) -> None:
    import json

    from graft.client import dataset_file
    from service.datasets import read_annotated_images

    (tmp_path / "shelf").mkdir()
    (tmp_path / "shelf" / "a.png").write_bytes(real_png(8, 8))
    (tmp_path / "shelf" / ".hidden").write_bytes(b"x")
    (tmp_path / "shelf" / "annotations.jsonl").write_text(json.dumps({"file": "a.png", "label": []}))
    body, content_type, name = dataset_file(tmp_path / "shelf", "detection")
    assert content_type == "application/zip" and name == "shelf.zip"
    data = read_annotated_images(io.BytesIO(body), **LIMITS, convert=lambda raw, label, where: (where, label))
    assert data.inputs == ["zip member 'a.png'"] and data.labels == [[]]
    plain, _, _ = dataset_file(tmp_path / "shelf")  # image-folder layout: top-level files are not examples
    assert zipfile.ZipFile(io.BytesIO(plain)).namelist() == []
