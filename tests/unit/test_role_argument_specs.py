"""Each role's meta/argument_specs.yml must mirror its defaults/main.yml exactly."""

from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "roles"
ROLE_NAMES = sorted(p.name for p in ROLES.iterdir() if (p / "defaults" / "main.yml").exists())

# argument_specs type -> Python types a default of that type may have
TYPES = {
    "str": (str,),
    "path": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def _load(role, *parts):
    return yaml.safe_load((ROLES / role).joinpath(*parts).read_text())


@pytest.fixture(params=ROLE_NAMES)
def role(request):
    defaults = _load(request.param, "defaults", "main.yml")
    spec = _load(request.param, "meta", "argument_specs.yml")["argument_specs"]["main"]
    return request.param, defaults, spec


def test_every_role_is_checked():
    # common, the internal role, has no variables of its own (only entry-point parameters).
    assert set(ROLE_NAMES) == {
        "circus",
        "console",
        "console_agent",
        "mongrel2",
        "tls_proxy",
        "wsgi_app",
        "wsgi_app_dispatcher",
    }


def test_same_variables(role):
    name, defaults, spec = role
    assert set(spec["options"]) == set(defaults), name


def test_same_defaults(role):
    name, defaults, spec = role
    for key, option in spec["options"].items():
        assert option.get("default") == defaults[key], f"{name}: {key}"


def test_types_fit_defaults(role):
    name, defaults, spec = role
    for key, option in spec["options"].items():
        assert isinstance(defaults[key], TYPES[option["type"]]), f"{name}: {key}"
        if isinstance(defaults[key], bool):
            assert option["type"] == "bool", f"{name}: {key}"


def test_choices_contain_default(role):
    name, defaults, spec = role
    for key, option in spec["options"].items():
        if "choices" in option:
            assert defaults[key] in option["choices"], f"{name}: {key}"


def test_everything_is_described(role):
    name, _, spec = role
    assert spec.get("short_description"), name
    for key, option in spec["options"].items():
        assert option.get("description"), f"{name}: {key}"


def test_variables_are_prefixed(role):
    name, defaults, _ = role
    for key in defaults:
        assert key.startswith(f"{name}_"), f"{name}: {key}"


def test_no_variable_belongs_to_two_roles():
    # wsgi_app_dispatcher_* also starts with wsgi_app_: each is defined by one role only.
    seen = {}
    for name in ROLE_NAMES:
        for key in _load(name, "defaults", "main.yml"):
            assert key not in seen, f"{key}: {seen.get(key)} and {name}"
            seen[key] = name


def test_defaults_order_matches_the_spec():
    # The spec mirrors the defaults in the same order, so both read as one grouped list.
    for name in ROLE_NAMES:
        defaults = list(_load(name, "defaults", "main.yml"))
        spec = list(_load(name, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"])
        assert spec == defaults, name
