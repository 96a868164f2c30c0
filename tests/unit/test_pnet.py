"""The private-network key file and protector (opentela/overlay/pnet.py), without a network."""

from __future__ import annotations

import functools
import os
import random
import stat
from collections.abc import Awaitable, Callable

import nacl.bindings
import pytest
import trio
import trio.testing

from opentela.overlay import pnet

KEY = bytes(range(32))

# golang.org/x/crypto/salsa20, salsa20_test.go, xSalsa20TestData (the vectors
# github.com/davidlazar/go-crypto/salsa20 -- go-libp2p's pnet cipher -- also reproduces).
GO_KEY = b"this is 32-byte key for xsalsa20"
GO_NONCE = b"24-byte nonce for xsalsa"
GO_HELLO = bytes.fromhex("002d4513843fc240c401e541")  # "Hello world!" encrypted
GO_ZEROS64 = bytes.fromhex(
    "4848297feb1fb52fb66d81609bd547fabcbe7026edc8b5e5e449d088bfa69c08"
    "8f5d8da1d791267c2c195a7f8cae9c4b4050d08ce6d3a151ec265f3a58e47648"
)


# -- the cipher -----------------------------------------------------------------------------------


def test_xsalsa20_matches_go_test_vectors() -> None:
    assert pnet.XSalsa20(GO_KEY, GO_NONCE).xor(b"Hello world!") == GO_HELLO
    assert pnet.XSalsa20(GO_KEY, GO_NONCE).xor(bytes(64)) == GO_ZEROS64


def test_xsalsa20_is_a_stream_across_odd_chunks() -> None:
    x = pnet.XSalsa20(GO_KEY, GO_NONCE)
    assert b"".join(x.xor(bytes(n)) for n in (1, 6, 57)) == GO_ZEROS64


def test_hsalsa20_matches_libsodium_crypto_core() -> None:
    """libsodium's XSalsa20, reached through PyNaCl's secretbox: its ciphertext of zeros is the
    keystream from byte 32 on (the first 32 bytes key the Poly1305 tag)."""
    rng = random.Random(7)
    for _ in range(20):
        key, nonce = rng.randbytes(32), rng.randbytes(24)
        n = rng.randrange(1, 300)
        box = nacl.bindings.crypto_secretbox(bytes(n), nonce, key)
        assert pnet.XSalsa20(key, nonce).xor(bytes(32 + n))[32:] == box[16:]


# -- the key file ---------------------------------------------------------------------------------


def test_write_then_load_round_trips_in_the_go_format(tmp_path) -> None:
    path = pnet.write_swarm_key(tmp_path / "swarm.key", rng=lambda n: KEY[:n])
    text = path.read_text()
    assert text == f"/key/swarm/psk/1.0.0/\n/base16/\n{KEY.hex()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pnet.load_swarm_key(path) == KEY


def test_write_refuses_to_overwrite(tmp_path) -> None:
    path = pnet.write_swarm_key(tmp_path / "swarm.key")
    before = path.read_bytes()
    with pytest.raises(pnet.SwarmKeyError, match="already exists"):
        pnet.write_swarm_key(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"/key/swarm/psk/2.0.0/\n/base16/\n" + b"00" * 32, "first line must be /key/swarm/psk"),
        (b"", "first line must be"),
        (b"/key/swarm/psk/1.0.0/\n/base32/\n" + b"00" * 32, "second line must be /base16/"),
        (b"/key/swarm/psk/1.0.0/", "second line"),
        (b"/key/swarm/psk/1.0.0/\n/base16/\n" + b"00" * 31, "64 hex digits .got 62"),
        (b"/key/swarm/psk/1.0.0/\n/base16/\n" + b"zz" * 32, "not all hex"),
        (b"/key/swarm/psk/1.0.0/\n/base16/\n" + b"00" * 33, "got 66"),
        (b"/key/swarm/psk/1.0.0/\n/base64/\nAAAA\n", "base64 of 32 bytes"),
        (b"/key/swarm/psk/1.0.0/\n/bin/\n" + b"\0" * 31, "exactly 32 bytes"),
    ],
)
def test_parse_errors_are_one_clear_line(body: bytes, match: str) -> None:
    with pytest.raises(pnet.SwarmKeyError, match=match) as info:
        pnet.parse_swarm_key(body, "swarm key k")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("swarm key k: ")


def test_parse_accepts_what_go_and_kubo_write() -> None:
    hexkey = KEY.hex().encode()
    assert pnet.parse_swarm_key(b"/key/swarm/psk/1.0.0/\n/base16/\n" + hexkey) == KEY
    assert pnet.parse_swarm_key(b"/key/swarm/psk/1.0.0/\r\n/base16/\r\n" + hexkey + b"\r\n") == KEY
    assert pnet.parse_swarm_key(b"/key/swarm/psk/1.0.0/\n/base16/\n" + hexkey.upper()) == KEY
    b64 = b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert pnet.parse_swarm_key(b"/key/swarm/psk/1.0.0/\n/base64/\n" + b64 + b"\n") == KEY
    assert pnet.parse_swarm_key(b"/key/swarm/psk/1.0.0/\n/bin/\n" + KEY) == KEY


def test_load_errors(tmp_path) -> None:
    with pytest.raises(pnet.SwarmKeyError, match=r"no swarm key at .*opentela-node swarm-key"):
        pnet.load_swarm_key(tmp_path / "missing.key")
    with pytest.raises(pnet.SwarmKeyError, match="is a directory"):
        pnet.load_swarm_key(tmp_path)
    path = pnet.write_swarm_key(tmp_path / "swarm.key")
    os.chmod(path, 0o644)
    with pytest.raises(pnet.SwarmKeyError, match=r"readable by others \(mode 644\); chmod 600"):
        pnet.load_swarm_key(path)
    os.chmod(path, 0o400)
    assert len(pnet.load_swarm_key(path)) == 32


def test_fingerprint_names_a_key_without_showing_it() -> None:
    fp = pnet.fingerprint(KEY)
    assert len(fp) == 16 and KEY.hex()[:8] not in fp
    assert fp == pnet.fingerprint(KEY) != pnet.fingerprint(bytes(32))


def test_log_once_per_address_per_period() -> None:
    limit = pnet.LogOnce(period_s=60)
    assert limit.should_log("10.0.0.1", 0.0)
    assert not limit.should_log("10.0.0.1", 59.0)
    assert limit.should_log("10.0.0.2", 59.0)
    assert limit.should_log("10.0.0.1", 60.5)


# -- the stream -----------------------------------------------------------------------------------


def _trio(fn: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """No pytest-trio here: each async test runs in its own trio.run."""

    @functools.wraps(fn)
    def run() -> None:
        trio.run(fn)

    return run


class _Half:
    """One end of an in-memory byte pipe, with RawStream's read/write."""

    def __init__(self, send: trio.testing.MemorySendStream, recv: trio.abc.ReceiveStream) -> None:
        self._send, self._recv = send, recv
        self.sent = bytearray()

    async def write(self, data: bytes) -> None:
        self.sent += data
        await self._send.send_all(data)

    async def read(self, n: int | None = None) -> bytes:
        return await self._recv.receive_some(n or 65536)


def _pair() -> tuple[_Half, _Half]:
    a, b = trio.testing.memory_stream_pair()
    return _Half(a, a), _Half(b, b)  # type: ignore[arg-type]


async def _read_exactly(s: pnet.ProtectedStream, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = await s.read(n - len(got))
        assert chunk
        got += chunk
    return got


@_trio
async def test_same_key_carries_bytes_both_ways_encrypted() -> None:
    raw_a, raw_b = _pair()
    a, b = pnet.ProtectedStream(raw_a, KEY), pnet.ProtectedStream(raw_b, KEY)
    msg = pnet.MULTISTREAM_HEADER + os.urandom(5000)
    async with trio.open_nursery() as n:
        n.start_soon(a.write, msg)
        assert await _read_exactly(b, len(msg)) == msg
        await b.write(b"pong")
        assert await _read_exactly(a, 4) == b"pong"
    # On the wire: a 24-byte nonce, then ciphertext (no plaintext leaks).
    assert len(raw_a.sent) == 24 + len(msg)
    assert msg[:64] not in bytes(raw_a.sent)
    nonce = bytes(raw_a.sent[:24])
    assert pnet.XSalsa20(KEY, nonce).xor(bytes(raw_a.sent[24:])) == msg


@_trio
async def test_a_listener_sends_its_nonce_before_its_first_read() -> None:
    """js-libp2p waits for our nonce before it sends anything: a reader must not wait first."""
    raw_a, raw_b = _pair()
    listener = pnet.ProtectedStream(raw_a, KEY)
    with trio.move_on_after(0.2):
        await listener.read(10)  # nothing comes; the nonce must have gone out meanwhile
    assert len(raw_a.sent) == 24
    assert await raw_b.read(100) == bytes(raw_a.sent)


@_trio
async def test_a_different_key_is_reported_as_a_mismatch() -> None:
    raw_a, raw_b = _pair()
    a = pnet.ProtectedStream(raw_a, KEY)
    b = pnet.ProtectedStream(raw_b, bytes(32), expect=pnet.MULTISTREAM_HEADER)
    await a.write(pnet.MULTISTREAM_HEADER + b"\x07/noise\n")
    with pytest.raises(pnet.PnetError, match="private network key mismatch"):
        await b.read(100)
    with pytest.raises(pnet.PnetError, match="mismatch"):  # and stays failed
        await b.read(100)


@_trio
async def test_the_expected_header_may_arrive_in_pieces() -> None:
    raw_a, raw_b = _pair()
    a = pnet.ProtectedStream(raw_a, KEY)
    b = pnet.ProtectedStream(raw_b, KEY, expect=pnet.MULTISTREAM_HEADER)
    for piece in (pnet.MULTISTREAM_HEADER[:3], pnet.MULTISTREAM_HEADER[3:], b"rest"):
        await a.write(piece)
        assert await _read_exactly(b, len(piece)) == piece


@_trio
async def test_a_peer_without_a_key_is_recognised() -> None:
    raw_a, raw_b = _pair()
    b = pnet.ProtectedStream(raw_b, KEY, expect=pnet.MULTISTREAM_HEADER)
    await raw_a.write(pnet.MULTISTREAM_HEADER + b"\x07/noise\n")  # plaintext libp2p
    with pytest.raises(pnet.PnetError, match="no swarm key"):
        await b.read(100)


@_trio
async def test_eof_inside_the_nonce_is_an_error_not_a_hang() -> None:
    to_us, from_peer = trio.testing.memory_stream_one_way_pair()
    to_peer, _ = trio.testing.memory_stream_one_way_pair()
    s = pnet.ProtectedStream(_Half(to_peer, from_peer), KEY)
    await to_us.send_all(b"\x01" * 10)
    await to_us.aclose()  # the peer half-closes: our nonce still goes out
    with trio.fail_after(1), pytest.raises(pnet.PnetError, match="after 10 of the 24 bytes"):
        await s.read(100)


# -- the setting ----------------------------------------------------------------------------------


def test_swarm_key_is_a_flag_a_yaml_key_and_an_env_var(tmp_path) -> None:
    from opentela.config import ConfigError, load

    path = str(pnet.write_swarm_key(tmp_path / "swarm.key"))
    yml = tmp_path / "c.yaml"
    yml.write_text(f"swarm-key: {path}\n")
    assert load(env={}, flags={"swarm_key": path}).swarm_key == path
    assert load(str(yml), env={}).swarm_key == path
    assert load(env={"OTELA_SWARM_KEY": path}).swarm_key == path
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match=r"^OTELA_SWARM_KEY: swarm key .* readable by others"):
        load(env={"OTELA_SWARM_KEY": path})
    with pytest.raises(ConfigError, match=r"^--swarm-key: no swarm key at"):
        load(env={}, flags={"swarm_key": str(tmp_path / "nope")})
