"""Mistakes a user makes in the settings are refused at start with one message that names the
setting as it was written (flag, ``OTELA_*`` variable or YAML key) and says what to write
instead. Pure: Config, load and validate, plus the identity errors behind ``--home``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from opentela.config import (
    NOT_CONFIG_ENV,
    Config,
    ConfigError,
    bootstrap_problem,
    load,
    notes,
    peer_id_problem,
    public_addr_problem,
    validate,
)
from opentela.overlay import identity

PID = identity.peer_id(Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
RSA_PID = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"  # a sha2-256 peer ID


def error(**kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        load(**{"env": {}, **kw})  # type: ignore[arg-type]
    return str(info.value)


# -- ports and addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http_host", "p2p_host"),
    [
        ("0.0.0.0", "0.0.0.0"),
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("::", "10.0.0.1"),
    ],
)
def test_same_port_on_overlapping_addresses(http_host: str, p2p_host: str) -> None:
    flags = {"http_port": 5000, "p2p_port": 5000, "http_host": http_host, "p2p_host": p2p_host}
    msg = error(flags=flags)
    assert "--http-port" in msg and "--p2p-port" in msg and "5000" in msg


def test_same_port_on_distinct_addresses_is_fine() -> None:
    flags = {"http_port": 5000, "p2p_port": 5000, "http_host": "127.0.0.1", "p2p_host": "127.0.0.2"}
    load(env={}, flags=flags)


def test_same_port_from_the_environment_names_the_variables() -> None:
    msg = error(env={"OTELA_HTTP_PORT": "5000", "OTELA_P2P_PORT": "5000"})
    assert "OTELA_HTTP_PORT" in msg and "OTELA_P2P_PORT" in msg


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("head.example.org", "/dns4/head.example.org/tcp/43905"),
        ("1.2.3.4:5000", "/ip4/1.2.3.4/tcp/5000"),
        ("[2001:db8::1]:5000", "/ip6/2001:db8::1/tcp/5000"),
        ("/ip4/1.2.3.4/udp/5000", "/ip4/203.0.113.10/tcp/43905"),
        ("/ip4/1.2.3.4/tcp/5000/p2p/" + PID, "no /p2p part"),
        ("/ip4/nope/tcp/5000", "not an IPv4 address"),
        ("/ip4/1.2.3.4/tcp/0", "1..65535"),
    ],
)
def test_public_addr_mistakes_suggest_the_right_form(value: str, hint: str) -> None:
    msg = error(flags={"public_addr": value})
    assert msg.startswith("--public-addr") and hint in msg, msg


@pytest.mark.parametrize(
    "value", ["203.0.113.10", "2001:db8::1", "/ip4/203.0.113.10/tcp/1", "/dns4/h.example/tcp/9"]
)
def test_public_addr_accepted_forms(value: str) -> None:
    assert public_addr_problem(value, 43905) is None
    assert load(env={}, flags={"public_addr": value}).public_addr == value


def test_p2p_host_must_be_an_ip() -> None:
    assert "--p2p-host" in error(flags={"p2p_host": "localhost"})
    load(env={}, flags={"p2p_host": "::1"})


# -- bootstrap addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "hint"),
    [
        (f"/ip4/10.0.0.1/udp/43905/quic-v1/p2p/{PID}", "/udp"),
        (f"/ip4/10.0.0.1/tcp/43905/ws/p2p/{PID}", "/ws"),
        ("/ip4/10.0.0.1/tcp/43905/p2p/12D3KooWA", "peer ID '12D3KooWA'"),
        (f"/ip4/10.0.0.1/tcp/43905/p2p/{PID[:-1]}", "peer-id"),
        ("/ip4/10.0.0.1/tcp/43905/p2p/0OIl", "not base58"),
        (f"/ip4/10.0.0.999/tcp/43905/p2p/{PID}", "not an IPv4 address"),
        (f"/ip4/10.0.0.1/tcp/99999/p2p/{PID}", "1..65535"),
        (f"/unix/x/tcp/1/p2p/{PID}", "must start with /ip4"),
        ("/ip4/10.0.0.1/tcp/43905", "/p2p/<peer-id>"),
        ("10.0.0.1:43905", "/ip4/10.0.0.1/tcp/43905/p2p/<peer-id>"),
        ("head.example:43905", "/dns4/head.example/tcp/43905/p2p/<peer-id>"),
    ],
)
def test_undialable_bootstraps_are_refused(addr: str, hint: str) -> None:
    msg = error(flags={"bootstrap": (addr,)})
    assert msg.startswith("--bootstrap") and hint in msg, msg


@pytest.mark.parametrize(
    "addr",
    [
        f"/ip4/10.0.0.1/tcp/43905/p2p/{PID}",
        f"/ip6/::1/tcp/43905/p2p/{PID}",
        f"/dns4/head.example/tcp/43905/p2p/{PID}",
        f"/dns/head.example/tcp/1/p2p/{RSA_PID}",
    ],
)
def test_dialable_bootstraps(addr: str) -> None:
    assert bootstrap_problem(addr) is None


def test_peer_id_check_matches_real_ids() -> None:
    for seed in range(1, 20):
        key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
        assert peer_id_problem(identity.peer_id(key)) is None
    assert peer_id_problem(RSA_PID) is None
    assert peer_id_problem(RSA_PID[:-2]) is not None
    assert peer_id_problem("") is not None


def test_bootstrap_from_env_names_the_variable() -> None:
    assert error(env={"OTELA_BOOTSTRAP": "/ip4/1.2.3.4/tcp/1/p2p/X"}).startswith("OTELA_BOOTSTRAP")


def test_bootstrap_url_must_be_http() -> None:
    assert "--bootstrap-url" in error(flags={"bootstrap_url": "head:8092"})
    load(env={}, flags={"bootstrap_url": "http://head:8092/v1/dnt/bootstraps"})


# -- backend, service, role ------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1/"])
def test_backend_ending_in_v1_is_its_base_url(given: str) -> None:
    cfg = load(env={}, flags={"backend": given})
    assert cfg.backend_url == "http://127.0.0.1:8080"
    assert any("/v1" in n and "http://127.0.0.1:8080" in n for n in notes(cfg))
    plain = load(env={}, flags={"backend": "http://127.0.0.1:8080/"})
    assert plain.backend_url == "http://127.0.0.1:8080" and notes(plain) == []
    # A path that is not /v1 (a proxy prefix) is kept.
    assert Config(backend="http://h/llm/").backend_url == "http://h/llm"


def test_backend_needs_a_host() -> None:
    assert "--backend" in error(flags={"backend": "http:///v1"})


def test_service_host_without_port_is_an_error() -> None:
    msg = error(flags={"service_host": "10.0.0.2"})
    assert msg.startswith("--service.host") and "--service.port" in msg
    assert error(env={"OTELA_SERVICE_HOST": "10.0.0.2"}).startswith("OTELA_SERVICE_HOST")
    cfg = load(env={}, flags={"service_host": "10.0.0.2", "service_port": 8000})
    assert cfg.backend_url == "http://10.0.0.2:8000"


def test_worker_needs_a_backend_and_head_has_none() -> None:
    msg = error(flags={"role": "worker"})
    assert "--role worker needs a backend" in msg and "--service.port or --backend" in msg
    msg = error(flags={"role": "head", "backend": "http://127.0.0.1:8000"})
    assert "--role head" in msg and "--backend" in msg
    msg = error(flags={"role": "head", "service_port": 8000})
    assert "--service.port" in msg
    assert load(env={}, flags={"role": "head"}).effective_role == "head"
    assert load(env={}, flags={"role": "worker", "service_port": 1}).effective_role == "worker"
    assert load(env={}, flags={"service_port": 1}).effective_role == "worker"


# -- unknown names -----------------------------------------------------------------------------


def test_unknown_otela_variable_is_an_error_with_a_suggestion() -> None:
    msg = error(env={"OTELA_DRAIN_TIMOUT": "3"})
    assert "OTELA_DRAIN_TIMOUT" in msg and "did you mean OTELA_DRAIN_TIMEOUT?" in msg
    # (OTELA_ZZZZZZ was 0.6 close to OTELA_DB: nonsense long enough to resemble nothing)
    assert "did you mean" not in error(env={"OTELA_ZZZZZZZZZZZZ": "1"})


def test_non_config_otela_variables_are_allowed() -> None:
    assert "OTELA_SLURM_DIR" in NOT_CONFIG_ENV
    assert load(env=dict.fromkeys(NOT_CONFIG_ENV, "1")) == Config()


def test_unknown_yaml_key_suggests(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("service:\n  nmae: llm\n")
    msg = error(config_file=str(p))
    assert "service_nmae" in msg and "did you mean service.name?" in msg
    p.write_text("drain-timout: 3\n")
    assert "did you mean drain-timeout?" in error(config_file=str(p))


# -- one message per setting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named", "not_named"),
    [
        ({"OTELA_DRAIN_TIMEOUT": "-1"}, "OTELA_DRAIN_TIMEOUT", ("max_body", "read")),
        ({"OTELA_READ_TIMEOUT": "0"}, "OTELA_READ_TIMEOUT", ("max_body", "drain")),
        ({"OTELA_MAX_BODY_BYTES": "0"}, "OTELA_MAX_BODY_BYTES", ("read", "drain")),
        ({"OTELA_PROBE_INTERVAL": "0"}, "OTELA_PROBE_INTERVAL", ("read", "drain")),
        ({"OTELA_LOG_LEVEL": "loud"}, "OTELA_LOG_LEVEL", ("format",)),
    ],
)
def test_each_setting_has_its_own_message(env: dict, named: str, not_named: tuple) -> None:
    msg = error(env=env)
    assert msg.startswith(named), msg
    assert not any(word in msg.lower() for word in not_named), msg


def test_message_names_the_yaml_key_and_file(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("drain_timeout: -1\n")
    assert error(config_file=str(p)).startswith(f"drain_timeout in {p} must be 0 or more")
    assert error(flags={"drain_timeout": -1}).startswith("--drain-timeout must be 0 or more")


def test_validate_without_sources_names_flags() -> None:
    with pytest.raises(ConfigError, match=r"^--drain-timeout"):
        validate(Config(drain_timeout=-1))


# -- --home and identity.key ---------------------------------------------------------------------


def _identity_error(home: Path) -> str:
    with pytest.raises(identity.IdentityError) as info:
        identity.load_or_create(home)
    return str(info.value)


def test_home_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "home"
    f.write_text("x")
    assert _identity_error(f) == f"--home {f} is a file, not a directory"
    msg = _identity_error(f / "sub")  # a parent is a file
    assert msg.startswith(f"cannot create --home {f / 'sub'}") and "Not a directory" in msg


def test_home_that_cannot_be_created() -> None:
    home = Path("/sys/opentela-test-home")  # EPERM even for root
    try:
        os.mkdir(home)
    except OSError:
        pass
    else:
        home.rmdir()
        pytest.skip("/sys is writable here")
    assert _identity_error(home).startswith(f"cannot create --home {home}: ")


def test_identity_key_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "identity.key").mkdir()
    assert "is a directory" in _identity_error(tmp_path)


def test_unreadable_identity_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity.create(tmp_path)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 000 does not stop root
    msg = _identity_error(tmp_path)
    assert msg == f"cannot read {tmp_path / 'identity.key'}: Permission denied"


def test_unwritable_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def denied(path: str, *a: object, **k: object) -> int:
        if str(path).endswith("identity.key"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)
    msg = _identity_error(tmp_path)
    assert "Permission denied" in msg and "--home" in msg


def test_backend_probe_errors_show_the_full_url() -> None:
    """What a wrong base URL looks like in the log: the doubled path is visible."""
    import asyncio

    from aiohttp import web

    from opentela.testing.serving import free_port
    from opentela.worker.backend import Backend, BackendError

    async def main() -> None:
        app = web.Application()  # answers 404 to everything
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port("127.0.0.1")
        await web.TCPSite(runner, "127.0.0.1", port).start()
        backend = Backend(f"http://127.0.0.1:{port}/v1/v1")  # /v1 twice: one is kept
        await backend.open()
        try:
            with pytest.raises(BackendError) as info:
                await backend.list_models()
            assert str(info.value) == f"GET http://127.0.0.1:{port}/v1/v1/v1/models answered 404"
            await runner.cleanup()
            with pytest.raises(BackendError) as info:
                await backend.list_models()
            assert f"GET http://127.0.0.1:{port}/v1/v1/v1/models: " in str(info.value)
        finally:
            await backend.close()

    asyncio.run(asyncio.wait_for(main(), 20))
