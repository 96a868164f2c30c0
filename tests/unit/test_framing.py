"""Length-prefixed msgpack frames: sans-I/O encoder and incremental decoder."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opentela.overlay.framing import (
    BODY,
    CANCEL,
    END,
    ERROR,
    KINDS,
    MAX_FRAME,
    REQ_HEAD,
    RESP_HEAD,
    Decoder,
    Frame,
    FrameError,
    encode,
    encode_body,
)

SAMPLES: list[tuple[int, object]] = [
    (
        REQ_HEAD,
        {
            "method": "POST",
            "path": "/v1/chat/completions",
            "headers": [["content-type", "application/json"], ["x-a", "b"]],
            "service": "llm",
        },
    ),
    (BODY, b'{"model": "m", "messages": []}'),
    (BODY, b""),
    (END, None),
    (RESP_HEAD, {"status": 200, "headers": [["content-type", "text/event-stream"]]}),
    (
        ERROR,
        {
            "status": 502,
            "message": "backend down",
            "type": "upstream",
            "code": "x",
            "retryable": True,
        },
    ),
    (CANCEL, None),
]


def raw_frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def test_sample_kinds_cover_all_kinds() -> None:
    assert {k for k, _ in SAMPLES} == set(KINDS)


@pytest.mark.parametrize(("kind", "payload"), SAMPLES)
def test_round_trip_each_kind(kind: int, payload: object) -> None:
    data = encode(kind, payload)
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    dec = Decoder()
    assert dec.feed(data) == [Frame(kind, payload)]
    assert dec.pending == 0


def test_default_payload_is_none() -> None:
    assert Decoder().feed(encode(END)) == [Frame(END, None)]


def test_byte_by_byte_feeding() -> None:
    stream = b"".join(encode(k, p) for k, p in SAMPLES)
    dec = Decoder()
    out: list[Frame] = []
    for i in range(len(stream)):
        out.extend(dec.feed(stream[i : i + 1]))
    assert out == [Frame(k, p) for k, p in SAMPLES]
    assert dec.pending == 0


def test_partial_frame_is_pending_until_complete() -> None:
    data = encode(BODY, b"x" * 100)
    dec = Decoder()
    assert dec.feed(data[:2]) == []  # not even a full length prefix
    assert dec.pending == 2
    assert dec.feed(data[2:50]) == []
    assert dec.pending == 50
    assert dec.feed(data[50:]) == [Frame(BODY, b"x" * 100)]
    assert dec.pending == 0


def test_many_frames_in_one_chunk() -> None:
    frames = [(BODY, bytes([i]) * i) for i in range(200)] + [(END, None)]
    stream = b"".join(encode(k, p) for k, p in frames)
    dec = Decoder()
    assert dec.feed(stream) == [Frame(k, p) for k, p in frames]
    assert dec.pending == 0


def test_trailing_partial_frame_kept_after_complete_ones() -> None:
    a, b = encode(BODY, b"one"), encode(BODY, b"two")
    dec = Decoder()
    assert dec.feed(a + b[:3]) == [Frame(BODY, b"one")]
    assert dec.pending == 3
    assert dec.feed(b[3:]) == [Frame(BODY, b"two")]


def test_oversize_length_raises_before_body_arrives() -> None:
    dec = Decoder()
    with pytest.raises(FrameError):
        dec.feed(struct.pack(">I", MAX_FRAME + 1))


def test_custom_max_frame() -> None:
    dec = Decoder(max_frame=16)
    assert dec.feed(encode(BODY, b"ok")) == [Frame(BODY, b"ok")]
    with pytest.raises(FrameError):
        dec.feed(encode(BODY, b"y" * 32))


def test_length_exactly_max_is_accepted_by_length_check() -> None:
    dec = Decoder(max_frame=10)
    assert dec.feed(struct.pack(">I", 10)) == []  # waits for the body, does not raise


def test_encode_refuses_oversize_frame() -> None:
    with pytest.raises(FrameError):
        encode(BODY, b"z" * (MAX_FRAME + 1))


@pytest.mark.parametrize(
    "obj",
    [
        {"kind": 1},
        [BODY],
        [BODY, b"x", b"extra"],
        [99, None],
        [0, None],
        ["2", b"x"],
        [None, None],
        "string",
        42,
        None,
        [],
    ],
)
def test_non_kind_payload_pair_raises(obj: object) -> None:
    with pytest.raises(FrameError):
        Decoder().feed(raw_frame(obj))


@pytest.mark.parametrize("body", [b"\xc1", b"\x92\x02", b"\x92\x02\xc0\xc0"])
def test_undecodable_frame_raises(body: bytes) -> None:
    with pytest.raises(FrameError):
        Decoder().feed(struct.pack(">I", len(body)) + body)


def test_encode_body_splits_under_max_frame() -> None:
    data = bytes(range(256)) * 9000  # ~2.3 MB
    frames = encode_body(data)
    assert len(frames) == 3
    assert all(len(f) - 4 <= MAX_FRAME for f in frames)
    dec = Decoder()
    got = [fr for f in frames for fr in dec.feed(f)]
    assert all(fr.kind == BODY for fr in got)
    assert b"".join(fr.payload for fr in got) == data


@pytest.mark.parametrize(
    ("size", "chunk", "n"), [(0, 10, 0), (1, 10, 1), (10, 10, 1), (11, 10, 2), (95, 10, 10)]
)
def test_encode_body_chunk_count(size: int, chunk: int, n: int) -> None:
    data = b"a" * size
    frames = encode_body(data, chunk=chunk)
    assert len(frames) == n
    dec = Decoder()
    payloads = [fr.payload for f in frames for fr in dec.feed(f)]
    assert all(len(p) <= chunk for p in payloads)
    assert b"".join(payloads) == data


payloads = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.text(max_size=50),
    st.integers(-(2**63), 2**63 - 1),
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.integers(0, 1000), st.text(max_size=10)), max_size=4
    ),
    st.lists(st.lists(st.text(max_size=10), min_size=2, max_size=2), max_size=4),
)
frames_st = st.lists(st.tuples(st.sampled_from(sorted(KINDS)), payloads), max_size=15)


@settings(max_examples=100, deadline=None)
@given(frames=frames_st, data=st.data())
def test_random_split_points_yield_same_frames(
    frames: list[tuple[int, object]], data: st.DataObject
) -> None:
    stream = b"".join(encode(k, p) for k, p in frames)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=20))))
    dec = Decoder()
    out: list[Frame] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out.extend(dec.feed(stream[prev:cut]))
        prev = cut
    assert out == [Frame(k, p) for k, p in frames]
    assert dec.pending == 0
