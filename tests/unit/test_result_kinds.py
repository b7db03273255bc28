"""What a handler may return (cortado.result) and how the executor receives large results (its spool)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from cortado import records
from cortado.result import (
    INLINE_RESULT_BYTES,
    MAX_RESULT_BYTES,
    Result,
    check_content_type,
    prepare_result,
)
from cortado.runtime import InvalidResultError
from cortado.v1 import records_pb2
from services.executor.spool import ResultSpool, remove


def test_a_dict_is_its_json_with_no_media_type(tmp_path: Path) -> None:
    prepared = prepare_result({"b": 1, "a": [2]}, root=tmp_path)
    assert (prepared.content_type, prepared.data, prepared.size, prepared.inline) == ("", b'{"b":1,"a":[2]}', 15, True)


@pytest.mark.parametrize("value", [b"\x00\xff", bytearray(b"\x00\xff"), memoryview(b"\x00\xff")])
def test_bytes_of_any_kind_are_octet_stream(tmp_path: Path, value: Any) -> None:
    prepared = prepare_result(value, root=tmp_path)
    assert (prepared.content_type, prepared.data) == ("application/octet-stream", b"\x00\xff")


def test_a_result_states_its_media_type(tmp_path: Path) -> None:
    prepared = prepare_result(Result(data=b"png", content_type="image/png"), root=tmp_path)
    assert (prepared.content_type, prepared.data) == ("image/png", b"png")


def test_a_small_file_is_read_at_once_and_a_large_one_is_read_in_chunks(tmp_path: Path) -> None:
    (tmp_path / "small.json").write_bytes(b"{}")
    small = prepare_result(Path("small.json"), root=tmp_path)
    assert (small.content_type, small.data, small.path) == ("application/json", b"{}", None)
    big = tmp_path / "out" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(b"y" * (INLINE_RESULT_BYTES + 10))
    prepared = prepare_result(Result(path=str(big), content_type="audio/wav"), root=tmp_path)
    assert (prepared.inline, prepared.path, prepared.content_type) == (False, big, "audio/wav")
    chunks = list(prepared.chunks())
    assert [len(c) for c in chunks] == [INLINE_RESULT_BYTES, 10]


def test_an_unknown_suffix_is_octet_stream(tmp_path: Path) -> None:
    (tmp_path / "x.unknownsuffix").write_bytes(b"1")
    assert prepare_result(Path("x.unknownsuffix"), root=tmp_path).content_type == "application/octet-stream"


def test_a_path_outside_the_working_directory_is_refused_even_through_dot_dot(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (tmp_path / "secret").write_text("s")
    with pytest.raises(InvalidResultError, match=r"returned the path '\.\./secret', which is outside the handler's"):
        prepare_result(Path("../secret"), root=root)


def test_a_missing_path_or_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidResultError, match=r"^handle_async returned the path 'nope', which does not exist$"):
        prepare_result(Path("nope"), root=tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(InvalidResultError, match=r"returned the path 'folder', which is not a file$"):
        prepare_result(Path("folder"), root=tmp_path)


def test_result_takes_exactly_one_of_data_or_path_and_a_valid_media_type() -> None:
    with pytest.raises(TypeError, match="exactly one of data"):
        Result()
    with pytest.raises(TypeError, match="exactly one of data"):
        Result(data=b"", path="x")
    with pytest.raises(TypeError, match="must be bytes, not str"):
        Result(data="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="content_type must be a media type such as 'image/png', not 'png'"):
        Result(data=b"", content_type="png")


@pytest.mark.parametrize("bad", ["", "image", "text/html\r\nX-Evil: 1", "a b/c", "image/png\n"])
def test_a_media_type_with_no_slash_spaces_or_line_breaks_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_content_type(bad)


def test_media_types_with_parameters_pass() -> None:
    assert check_content_type("audio/ogg; codecs=opus") == "audio/ogg; codecs=opus"
    assert check_content_type("application/vnd.api+json") == "application/vnd.api+json"


def test_something_else_names_every_kind_a_handler_may_return(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidResultError, match=r"must return a dict \(or bytes, a pathlib.Path or a cortado.Result\)"
    ):
        prepare_result(["x"], root=tmp_path)


def test_the_spool_keeps_what_arrives_with_its_digest_and_forgets_on_discard(tmp_path: Path) -> None:
    spool = ResultSpool(str(tmp_path))
    spool.add("a", b"hello ")
    spool.add("a", b"world")
    spool.add("b", b"other")
    taken = spool.take("a")
    assert taken is not None
    assert (taken.path.read_bytes(), taken.size, taken.sha256) == (
        b"hello world",
        11,
        hashlib.sha256(b"hello world").hexdigest(),
    )
    remove(taken)
    assert not taken.path.exists()
    spool.discard("b")
    spool.discard("unknown")
    assert spool.take("b") is None and list(tmp_path.iterdir()) == []


def test_the_spool_stops_writing_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import services.executor.spool as spool_module

    monkeypatch.setattr(spool_module, "MAX_RESULT_BYTES", 10)
    spool = ResultSpool(str(tmp_path))
    spool.add("a", b"x" * 8)
    spool.add("a", b"x" * 8)
    spool.add("a", b"x")
    taken = spool.take("a")
    assert taken is not None and taken.over_limit and taken.path.stat().st_size == 8
    spool.close()
    assert MAX_RESULT_BYTES == 1024**3


def test_the_http_record_names_a_stored_result_instead_of_holding_it() -> None:
    record = records_pb2.RequestRecord(
        id="r1",
        status=records_pb2.REQUEST_STATUS_COMPLETED,
        result_content_type="image/png",
        result_size=5_000_000,
        result_object="r1.abcd",
        result_sha256="ab" * 32,
    )
    body = records.render_json(records.view(record), "pics")
    assert body == (
        b'{"id":"r1","status":"completed","result_url":"/pics/r1/result","result_content_type":"image/png",'
        b'"result_bytes":5000000,"result_sha256":"' + b"ab" * 32 + b'","timestamp":"1970-01-01T00:00:00.000000Z"}'
    )
    inline = records_pb2.RequestRecord(id="r2", status=records_pb2.REQUEST_STATUS_COMPLETED, result_json=b'{"a":1}')
    assert records.render_json(records.view(inline), "pics").startswith(
        b'{"id":"r2","status":"completed","result":{"a":1},'
    )


def test_a_media_type_longer_than_256_characters_is_refused() -> None:
    long = "application/" + "x" * 245
    assert check_content_type(long[:256]) == long[:256]
    with pytest.raises(ValueError, match="content_type is 257 characters; at most 256 are allowed"):
        check_content_type(long)
