import os

import pytest

from ringmaster_console.config import ConfigError, agent_config, console_config, load_toml

AGENT = {
    "listen": "tcp://10.0.0.5:5590",
    "secret_key": "/etc/ringmaster/console-agent/agent.key_secret",
    "authorized_dir": "/etc/ringmaster/console-agent/authorized",
    "circus": {"endpoint": "ipc:///run/circus/control.sock", "include_dir": "/etc/circus/conf.d"},
    "scale": {"apps": ["shop"], "max_processes": 32},
}

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
CONSOLE = {
    "secret_key": "s" * 32,
    "password_hash": "scrypt:32768:8:1$salt$hash",
    "client_secret_key": "/etc/ringmaster/console/console.key_secret",
    "hosts": [{"name": "w1", "endpoint": "tcp://10.0.0.5:5590", "public_key": KEY}],
}


def test_agent_defaults():
    config = agent_config(AGENT)
    assert config.scalable == frozenset({"shop"})
    assert config.max_processes == 32
    assert config.fact_file == "/etc/ansible/facts.d/ringmaster_scale.fact"
    assert config.pubsub_endpoint is None and config.timeout == 1.0


def changed(base, path, value):
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("listen",), KeyError, "listen is missing"),
        (("listen",), "ipc:///x", "tcp:// address"),
        (("secret_key",), "agent.key_secret", "absolute path"),
        (("circus",), KeyError, "circus is missing"),
        (("circus", "include_dir"), KeyError, "include_dir is missing"),
        (("scale", "apps"), "shop", "apps must be list"),
        (("scale", "apps"), [""], "list of watcher names"),
        (("scale", "max_processes"), 0, "above 0"),
        (("scale", "max_processes"), True, "must be int"),
        (("circus", "timeout"), "5", "must be int"),
    ],
)
def test_agent_refused(path, value, why):
    with pytest.raises(ConfigError, match=why):
        agent_config(changed(AGENT, path, value))


def test_console_pins():
    from ringmaster_console.config import pinned_counts

    hosts = [{**CONSOLE["hosts"][0], "pinned": {"shop": 2}}]
    config = console_config({**CONSOLE, "hosts": hosts})
    assert pinned_counts(config.hosts) == {"shop": {"w1": 2}}
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ConfigError, match=r"pinned\.shop must be a whole number"):
            console_config({**CONSOLE, "hosts": [{**CONSOLE["hosts"][0], "pinned": {"shop": bad}}]})


def test_console_defaults():
    config = console_config(CONSOLE)
    assert config.https is True and config.max_processes == 256 and config.timeout == 1.5
    assert config.hosts[0].name == "w1"


@pytest.mark.parametrize(
    ("path", "value", "why"),
    [
        (("secret_key",), "short", "at least 32"),
        (("password_hash",), "hunter2", "ringmaster-console-hash"),
        (("hosts",), [{"name": "w1", "endpoint": "w1:5590", "public_key": KEY}], "tcp://"),
        (("hosts",), [{"name": "w1", "endpoint": "tcp://w1:1", "public_key": "x"}], "40 Z85"),
        (
            ("hosts",),
            [{"name": "w1", "endpoint": "tcp://w1:1", "public_key": "~" * 40}],
            "not valid Z85",
        ),
        (("action_timeout",), 0, "above 0"),
        (("hosts",), [{"name": "w1", "endpoint": "tcp://w1:1"}], "public_key is missing"),
        (("hosts",), [CONSOLE["hosts"][0], CONSOLE["hosts"][0]], "same name"),
        (("https",), "yes", "must be bool"),
    ],
)
def test_console_refused(path, value, why):
    with pytest.raises(ConfigError, match=why):
        console_config(changed(CONSOLE, path, value))


def test_load_toml_private(tmp_path):
    path = tmp_path / "console.toml"
    path.write_text('secret_key = "x"\n')
    os.chmod(path, 0o600)
    assert load_toml(str(path), private=True) == {"secret_key": "x"}
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_toml(str(path), private=True)
    path.write_text("secret_key = \n")
    with pytest.raises(ConfigError, match=r"console\.toml"):
        load_toml(str(path))


def test_agent_metrics_urls():
    config = agent_config({**AGENT, "metrics": {"shop": "http://127.0.0.1:9102/metrics"}})
    assert config.metrics == (("shop", "http://127.0.0.1:9102/metrics"),)
    with pytest.raises(ConfigError, match="http:// URL"):
        agent_config({**AGENT, "metrics": {"shop": "file:///etc/shadow"}})
