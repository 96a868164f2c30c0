"""Configuration: YAML < environment < flags, strict keys, validation, no dead settings."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import opentela
from opentela import config
from opentela.config import Config, ConfigError, load, validate

PA, PB = (
    "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",
    "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq",
)
MA = f"/ip4/10.0.0.1/tcp/43905/p2p/{PA}"
MB = f"/dns4/head.example/tcp/43905/p2p/{PB}"


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "otela.yaml"
    p.write_text(text)
    return str(p)


def test_defaults() -> None:
    cfg = load(env={})
    assert cfg == Config()
    assert cfg.http_host == "0.0.0.0" and cfg.http_port == 8092
    assert cfg.p2p_host == "0.0.0.0" and cfg.p2p_port == 43905
    assert cfg.bootstrap == ()
    assert cfg.service_host == "127.0.0.1" and cfg.service_port == 0
    assert cfg.max_body_bytes == 16 * 1024 * 1024
    assert cfg.read_timeout == 300.0
    assert cfg.log_format == "auto" and cfg.log_level == "info"
    assert cfg.backend_url == ""
    assert cfg.effective_role == "head"
    assert cfg.home_path == Path("~/.otela").expanduser()


def test_unrelated_environment_is_ignored() -> None:
    assert load(env={"HOME": "/x", "PATH": "/bin", "OTELA_SLURM_DIR": "/tmp/s"}) == Config()
    with pytest.raises(ConfigError, match="OTELA_NOT_A_SETTING"):
        load(env={"OTELA_NOT_A_SETTING": "1"})


def test_yaml_nested_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "service:\n  name: llm\n  port: 8080\n  host: 10.1.2.3\n"
        f"bootstrap:\n  addr: [/ip4/1.2.3.4/tcp/1/p2p/{PA}, /ip4/5.6.7.8/tcp/2/p2p/{PB}]\n",
    )
    cfg = load(path, env={})
    assert cfg.service_name == "llm"
    assert cfg.service_port == 8080
    assert cfg.service_host == "10.1.2.3"
    assert cfg.bootstrap == (f"/ip4/1.2.3.4/tcp/1/p2p/{PA}", f"/ip4/5.6.7.8/tcp/2/p2p/{PB}")
    assert cfg.backend_url == "http://10.1.2.3:8080"
    assert cfg.effective_role == "worker"


def test_yaml_flat_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"http-port: 1\nhttp_host: 127.0.0.1\nread-timeout: 2.5\nbootstrap: /ip4/1.1.1.1/tcp/1/p2p/{PA}\n"
        "service.name: llm\nbackend: http://127.0.0.1:9000/\n",
    )
    cfg = load(path, env={})
    assert cfg.http_port == 1
    assert cfg.http_host == "127.0.0.1"
    assert cfg.read_timeout == 2.5
    assert cfg.bootstrap == (f"/ip4/1.1.1.1/tcp/1/p2p/{PA}",)
    assert cfg.service_name == "llm"
    assert cfg.backend_url == "http://127.0.0.1:9000"  # trailing slash stripped


def test_empty_yaml_is_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, ""), env={}) == Config()


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "a: [unclosed\n"])
def test_bad_yaml(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load(write(tmp_path, text), env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(tmp_path / "nope.yaml"), env={})


def test_env() -> None:
    cfg = load(
        env={
            "OTELA_HTTP_PORT": "9999",
            "OTELA_BOOTSTRAP": f"{MA}, {MB},,",
            "OTELA_SERVICE_NAME": "llm",
            "OTELA_SERVICE_PORT": "8000",
            "OTELA_READ_TIMEOUT": "1.5",
        }
    )
    assert cfg.http_port == 9999
    assert cfg.bootstrap == (MA, MB)
    assert cfg.service_name == "llm"
    assert cfg.service_port == 8000
    assert cfg.read_timeout == 1.5


def test_env_bootstrap_alias() -> None:
    assert load(env={"OTELA_BOOTSTRAP_ADDR": f"{MA},{MB}"}).bootstrap == (MA, MB)


def test_precedence_yaml_env_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"http_port: 1000\np2p_port: 2000\nlog_level: debug\nbootstrap: [/ip4/10.0.0.9/tcp/1/p2p/{PA}]\n",
    )
    env = {"OTELA_HTTP_PORT": "1001", "OTELA_P2P_PORT": "2001", "OTELA_BOOTSTRAP": f"{MA},{MB}"}
    flags = {"http-port": 1002, "bootstrap": (), "log_level": None}
    cfg = load(path, env=env, flags=flags)
    assert cfg.http_port == 1002  # flag beats env beats YAML
    assert cfg.p2p_port == 2001  # env beats YAML
    assert cfg.log_level == "debug"  # YAML only; None flag does not override
    assert cfg.bootstrap == (MA, MB)  # empty tuple flag does not override
    assert load(path, env={}).http_port == 1000


def test_flags_dotted_and_dashed_names() -> None:
    cfg = load(env={}, flags={"service.name": "llm", "service.port": 7000, "max-body-bytes": 10})
    assert cfg.service_name == "llm" and cfg.service_port == 7000 and cfg.max_body_bytes == 10
    assert load(env={}, flags={"bootstrap": (MA, MB)}).bootstrap == (MA, MB)


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http_prot"):
        load(write(tmp_path, "http_prot: 1\n"), env={})
    with pytest.raises(ConfigError, match="service_nmae"):
        load(write(tmp_path, "service:\n  nmae: llm\n"), env={})


def test_unknown_flag() -> None:
    with pytest.raises(ConfigError, match="frobnicate"):
        load(env={}, flags={"frobnicate": 1})


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"OTELA_HTTP_PORT": "abc"}, "OTELA_HTTP_PORT"),
        ({"OTELA_READ_TIMEOUT": "soon"}, "OTELA_READ_TIMEOUT"),
    ],
)
def test_uncoercible_values(env: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(env=env)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"service_name": "llm"}, "service"),
        ({"role": "boss"}, "role"),
        ({"http_port": 0}, "--http-port"),
        ({"http_port": 65536}, "--http-port"),
        ({"p2p_port": -1}, "--p2p-port"),
        ({"backend": "ftp://x"}, "http"),
        ({"backend": "localhost:8000"}, "http"),
        ({"subprocess": "vllm serve"}, "subprocess"),
        ({"log_format": "xml"}, "--log-format"),
        ({"max_body_bytes": 0}, "positive"),
        ({"read_timeout": -1}, "positive"),
    ],
)
def test_validation_errors(flags: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load(env={}, flags=flags)


@pytest.mark.parametrize(
    "flags",
    [
        {"service_name": "llm", "service_port": 8000},
        {"service_name": "llm", "backend": "https://example.org/v1/"},
        {"subprocess": "vllm serve", "service_port": 8000},
        {"role": "head"},
        {"role": "worker", "service_port": 8000},
        {"http_port": 65535, "p2p_port": 1},
    ],
)
def test_valid_combinations(flags: dict) -> None:
    cfg = load(env={}, flags=flags)
    # Accepted as given, and nothing else moved from its default.
    assert {k: getattr(cfg, k) for k in flags} == flags
    assert dataclasses.replace(cfg, **{k: getattr(Config(), k) for k in flags}) == Config()


def test_role_default_and_explicit() -> None:
    assert Config(service_port=8000).effective_role == "worker"
    assert Config(backend="http://x").effective_role == "worker"
    assert Config(role="head", service_port=8000).effective_role == "head"
    assert Config().effective_role == "head"


def test_backend_beats_service_port() -> None:
    assert Config(backend="http://b:1/", service_port=2).backend_url == "http://b:1"


def test_validate_directly() -> None:
    validate(Config())
    with pytest.raises(ConfigError):
        validate(Config(http_port=0))


# -- dead-config guard ------------------------------------------------------------------------

PKG = Path(opentela.__file__).parent


def _source_outside_config() -> str:
    return "\n".join(
        p.read_text()
        for p in sorted(PKG.rglob("*.py"))
        if p.resolve() != Path(config.__file__).resolve()
    )


def _property_fields() -> dict[str, set[str]]:
    """property name → Config fields and properties it reads through ``self.<name>``."""
    tree = ast.parse(inspect.getsource(Config))
    out: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(
            isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list
        ):
            out[node.name] = {
                n.attr
                for n in ast.walk(node)
                if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name)
                and n.value.id == "self"
            }
    return out


def _used(name: str, src: str) -> bool:
    # cfg.<name>, or Config(...).<name> as in the CLI.
    return bool(re.search(rf"\bcfg\.{name}\b|Config\([^)]*\)\.{name}\b", src))


def test_guard_helpers_work() -> None:
    props = _property_fields()
    assert props["backend_url"] >= {"backend", "service_host", "service_port"}
    assert "backend_url" in props["effective_role"]
    src = _source_outside_config()
    assert _used("http_port", src) and _used("home_path", src)
    assert not _used("no_such_setting", src)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Config)])
def test_every_field_is_read_outside_config(field: str) -> None:
    src = _source_outside_config()
    props = _property_fields()
    # A property counts as used when read outside config.py, or by another used property.
    used_props = {p for p in props if _used(p, src)}
    frontier = list(used_props)
    while frontier:
        for q in props[frontier.pop()] & props.keys():
            if q not in used_props:
                used_props.add(q)
                frontier.append(q)
    via = [p for p in used_props if field in props[p]]
    assert _used(field, src) or via, f"Config.{field} is never read outside config.py"


def test_bootstrap_must_be_a_p2p_multiaddr() -> None:
    with pytest.raises(ConfigError, match="/p2p/<peer-id>"):
        load(env={}, flags={"bootstrap": ("10.0.0.1:43905",)})
