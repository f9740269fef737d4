"""The agent's and the console's configuration files (TOML), checked whole at start.

Secrets (the console's session key and password hash, the CURVE secret keys) live in files
only root or the console's account can read, never on a command line.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass

from ringmaster_handler.curve import CurveError, check_key


class ConfigError(ValueError):
    pass


def _get(table: dict, key: str, kind, where: str, default=None, required: bool = True):
    if key not in table:
        if required and default is None:
            raise ConfigError(f"{where}: {key} is missing")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"{where}: {key} must be {kinds[0].__name__}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(f"{where}: {key} must be {kinds[0].__name__}, got {value!r}")
    return value


def _positive(value, key: str, where: str):
    if value <= 0:
        raise ConfigError(f"{where}: {key} must be above 0, got {value}")
    return value


def _seconds(table: dict, key: str, where: str, default: float) -> float:
    """A duration in seconds, above 0, as a float."""
    return float(_positive(_get(table, key, (int, float), where, default=default), key, where))


def _count(table: dict, key: str, where: str, default: int) -> int:
    """A whole number above 0."""
    return _positive(_get(table, key, int, where, default=default), key, where)


def _absolute(value: str, key: str, where: str) -> str:
    if not os.path.isabs(value):
        raise ConfigError(f"{where}: {key} must be an absolute path, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class AgentConfig:
    listen: str  # tcp://ADDRESS:PORT the console connects to
    secret_key: str  # the agent's CURVE .key_secret certificate
    authorized_dir: str  # the consoles' public .key certificates
    endpoint: str  # circusd's control endpoint
    pubsub_endpoint: str | None
    flapping_state_file: str | None
    include_dir: str  # circus watcher files (NAME.ini)
    fact_file: str  # where scale.yml remembers counts
    scalable: frozenset[str]
    max_processes: int
    # On a front: each app's dispatcher /metrics page (read when the console asks).
    metrics: tuple[tuple[str, str], ...] = ()
    # Under the console's wait for a host (1.5 s), so that a circusd that does not answer is
    # reported as such rather than the host as silent.
    timeout: float = 1.0
    action_timeout: float = 120.0


def agent_config(data: dict, where: str = "agent config") -> AgentConfig:
    circus = _get(data, "circus", dict, where)
    scale = _get(data, "scale", dict, where, default={}, required=False)
    listen = _get(data, "listen", str, where)
    if not listen.startswith("tcp://"):
        raise ConfigError(f"{where}: listen must be a tcp:// address, got {listen!r}")
    apps = _get(scale, "apps", list, f"{where} [scale]", default=[], required=False)
    if not all(isinstance(a, str) and a for a in apps):
        raise ConfigError(f"{where} [scale]: apps must be a list of watcher names")
    cw = f"{where} [circus]"
    metrics = _get(data, "metrics", dict, where, default={}, required=False)
    for app, url in metrics.items():
        if not isinstance(url, str) or not url.startswith("http://"):
            raise ConfigError(f"{where} [metrics]: {app} must be an http:// URL of a /metrics page")
    return AgentConfig(
        metrics=tuple(sorted(metrics.items())),
        listen=listen,
        secret_key=_absolute(_get(data, "secret_key", str, where), "secret_key", where),
        authorized_dir=_absolute(_get(data, "authorized_dir", str, where), "authorized_dir", where),
        endpoint=_get(circus, "endpoint", str, cw),
        pubsub_endpoint=_get(circus, "pubsub_endpoint", str, cw, required=False),
        flapping_state_file=_get(circus, "flapping_state_file", str, cw, required=False),
        include_dir=_absolute(_get(circus, "include_dir", str, cw), "include_dir", cw),
        fact_file=_absolute(
            _get(
                scale, "fact_file", str, where, default="/etc/ansible/facts.d/ringmaster_scale.fact"
            ),
            "fact_file",
            where,
        ),
        scalable=frozenset(apps),
        max_processes=_count(scale, "max_processes", where, 64),
        timeout=_seconds(circus, "timeout", cw, 1),
        action_timeout=_seconds(circus, "action_timeout", cw, 120),
    )


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    endpoint: str
    public_key: str  # the agent's CURVE public key (Z85)
    # {app: count} this host always gets, as scale.yml's scale_host_workers.
    pinned: tuple[tuple[str, int], ...] = ()


# Debian's libjs-chart.js: served by the console itself, no CDN.
DEFAULT_CHART_JS = "/usr/share/javascript/chart.js/chart.min.js"


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    secret_key: str  # signs the session cookie
    password_hash: str  # werkzeug.security format (scrypt by default)
    client_secret_key: str  # the console's CURVE .key_secret certificate
    hosts: tuple[Host, ...]
    https: bool = True
    max_processes: int = 256
    timeout: float = 1.5
    # How long a page waits for the hosts' results of an action: under the request timeout of
    # the app that serves the console (wsgi_app_request_timeout, 60 s by default).
    action_timeout: float = 50.0
    chart_js: str = DEFAULT_CHART_JS
    login_failures_free: int = 3
    login_delay_max: float = 60.0


def _pins(table: dict, where: str) -> tuple[tuple[str, int], ...]:
    for app, count in table.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"{where}: pinned.{app} must be a whole number, got {count!r}")
    return tuple(sorted(table.items()))


def pinned_counts(hosts: tuple[Host, ...]) -> dict[str, dict[str, int]]:
    """{app: {host: count}} from the hosts' ``pinned`` tables."""
    out: dict[str, dict[str, int]] = {}
    for host in hosts:
        for app, count in host.pinned:
            out.setdefault(app, {})[host.name] = count
    return out


def console_config(data: dict, where: str = "console config") -> ConsoleConfig:
    secret = _get(data, "secret_key", str, where)
    if len(secret) < 32:
        raise ConfigError(f"{where}: secret_key must be at least 32 characters")
    password_hash = _get(data, "password_hash", str, where)
    if not password_hash.startswith(("scrypt:", "pbkdf2:")):
        raise ConfigError(f"{where}: password_hash must come from ringmaster-console-hash")
    hosts = []
    for number, entry in enumerate(_get(data, "hosts", list, where), 1):
        hw = f"{where} [[hosts]] #{number}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{hw}: must be a table")
        host = Host(
            name=_get(entry, "name", str, hw),
            endpoint=_get(entry, "endpoint", str, hw),
            public_key=_get(entry, "public_key", str, hw),
            pinned=_pins(_get(entry, "pinned", dict, hw, default={}, required=False), hw),
        )
        if not host.endpoint.startswith("tcp://"):
            raise ConfigError(f"{hw}: endpoint must be a tcp:// address")
        try:
            check_key(host.public_key.encode("ascii", "replace"), f"{hw}: public_key")
        except CurveError as exc:
            raise ConfigError(str(exc)) from None
        hosts.append(host)
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: two hosts have the same name")
    return ConsoleConfig(
        secret_key=secret,
        password_hash=password_hash,
        client_secret_key=_absolute(
            _get(data, "client_secret_key", str, where), "client_secret_key", where
        ),
        hosts=tuple(hosts),
        https=_get(data, "https", bool, where, default=True, required=False),
        max_processes=_count(data, "max_processes", where, 256),
        timeout=_seconds(data, "timeout", where, 1.5),
        action_timeout=_seconds(data, "action_timeout", where, 50),
        chart_js=_get(data, "chart_js", str, where, default=DEFAULT_CHART_JS),
        login_failures_free=_get(data, "login_failures_free", int, where, default=3),
        login_delay_max=float(_get(data, "login_delay_max", (int, float), where, default=60)),
    )


def load_toml(path: str, private: bool = False) -> dict:
    """The file's tables; ``private``: refused unless only its owner can read it (0600)."""
    try:
        st = os.stat(path)
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if private and st.st_mode & 0o077:
        raise ConfigError(
            f"{path} holds secrets but group or others can read it "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
        )
    return data
