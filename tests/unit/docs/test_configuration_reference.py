"""docs/configuration.md against the code: every setting documented, every row read by something.

The settings are found, not listed: every pydantic-settings class under `services`, each field's
environment variable named the way pydantic-settings names it (the field's alias if it has
one, else env_prefix + field name; upper case unless the class is case-sensitive), and that
naming is checked against pydantic-settings itself. Variables read directly (`os.environ`,
`os.getenv`) are found by reading the source of services/, deploy/, bench/ and tests/; make
variables (`NAME ?= ...`) in the Makefile and mk/.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import AliasChoices, AliasPath
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

import services
from tests.doc_blocks import ROOT

REFERENCE = ROOT / "docs" / "configuration.md"
#: `<SVC>_X` in the reference stands for both services' variables.
SERVICE_PREFIXES = ("ORDER_", "PAYMENT_")
SOURCE_DIRS = ("services", "deploy", "bench", "tests")
#: The operating system's own, read to pass them on (a test's PATH), not settings of ours.
SYSTEM_VARIABLES = {"PATH", "HOME"}
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
_DOCUMENTED = re.compile(r"`([A-Z<][A-Z0-9_<>*]*)`")
_MAKE_VARIABLE = re.compile(r"^([A-Z][A-Z0-9_]*)\s*\?=", re.M)


# -- the settings classes ------------------------------------------------------------------


def service_modules() -> Iterator[types.ModuleType]:
    """Every module under `services`, imported (`__main__` modules would run: skipped)."""
    for found in pkgutil.walk_packages(services.__path__, "services."):
        if found.name.rsplit(".", 1)[-1] != "__main__":
            yield importlib.import_module(found.name)


def settings_classes() -> list[type[BaseSettings]]:
    """Every BaseSettings subclass defined under `services` that is read as it is: a class
    that only serves as the base of others (ServiceSettings) is read through them."""
    found = {
        cls
        for module in service_modules()
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseSettings) and cls.__module__.startswith("services.")
    }
    bases = {base for cls in found for base in cls.__mro__[1:]}
    return sorted(found - bases, key=lambda cls: cls.__qualname__)


def env_names(cls: type[BaseSettings], field: FieldInfo, name: str) -> list[str]:
    """The environment variables pydantic-settings reads `field` from."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        names = [alias]
    elif isinstance(alias, AliasChoices):
        names = [c if isinstance(c, str) else str(c.path[0]) for c in alias.choices]
    elif isinstance(alias, AliasPath):
        names = [str(alias.path[0])]
    else:
        names = [cls.model_config.get("env_prefix", "") + name]
    if not cls.model_config.get("case_sensitive", False):
        names = [n.upper() for n in names]
    return sorted(set(names))


def settings_env() -> dict[str, str]:
    """Environment variable -> the setting it feeds (`Class.field`)."""
    return {
        env: f"{cls.__qualname__}.{name}"
        for cls in settings_classes()
        for name, field in cls.model_fields.items()
        for env in env_names(cls, field, name)
    }


# -- variables read directly, and make variables --------------------------------------------


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _environment_aliases(tree: ast.Module) -> set[str]:
    """Names bound to os.environ or os.environ.get in a module (`env = os.environ.get`)."""
    return {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and _dotted(node.value) in ("os.environ", "os.environ.get")
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _read_names(tree: ast.Module) -> Iterator[str]:
    """The literal names of `os.environ.get("X")`, `os.getenv("X")`, `os.environ["X"]`, and of
    the same through an alias."""
    aliases = _environment_aliases(tree)
    readers = {"os.environ.get", "os.getenv", "environ.get", "getenv"}
    readers |= {f"{alias}.get" for alias in aliases} | aliases
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and _dotted(node.func) in readers and node.args:
            key = node.args[0]
        elif isinstance(node, ast.Subscript) and _dotted(node.value) in {"os.environ", *aliases}:
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            yield key.value


def _python_files() -> Iterator[Path]:
    for folder in SOURCE_DIRS:
        yield from sorted((ROOT / folder).rglob("*.py"))


def read_directly() -> dict[str, str]:
    """Variables the code reads by a literal name -> the first file that does."""
    found: dict[str, str] = {}
    for path in _python_files():
        for name in _read_names(ast.parse(path.read_text())):
            if _ENV_NAME.fullmatch(name):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def names_in_environment_readers() -> set[str]:
    """Every upper-case string constant of a module that reads the environment: the names a
    module reads through a table or a constant (KAFKA_SASL_USERNAME, KAFKA_CONFIG_, ...)."""
    found: set[str] = set()
    for path in _python_files():
        text = path.read_text()
        if "os.environ" not in text and "getenv" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"[A-Z][A-Z0-9_]*", node.value):
                    found.add(node.value)
    return found


def make_files() -> list[Path]:
    return [ROOT / "Makefile", *sorted((ROOT / "mk").glob("*.mk"))]


def make_variables() -> set[str]:
    """Variables the Makefile lets a caller set: `NAME ?= default`."""
    return {name for path in make_files() for name in _MAKE_VARIABLE.findall(path.read_text())}


def names_used_by_make() -> set[str]:
    """Every $(NAME) and NAME= the Makefile mentions (e.g. `make token USER=N`)."""
    text = "\n".join(path.read_text() for path in make_files())
    return set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", text)) | make_variables()


def opentelemetry_names() -> set[str]:
    """The OTEL_* variables the OpenTelemetry SDK reads (tracing's other settings)."""
    from opentelemetry import environment_variables as api
    from opentelemetry.sdk import environment_variables as sdk

    return {name for module in (api, sdk) for name in dir(module) if name.startswith("OTEL_")}


# -- the reference --------------------------------------------------------------------------


def documented() -> list[str]:
    """The names in the first column of the reference's `| variable |` tables, as written."""
    names: list[str] = []
    in_table = False
    for line in REFERENCE.read_text().splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        first = line.split("|")[1].strip()
        if first == "variable":
            in_table = True
        elif in_table and not set(first) <= {"-", ":"}:
            names += _DOCUMENTED.findall(first)
    return names


def expand(name: str) -> list[str]:
    """`<SVC>_X` -> ORDER_X, PAYMENT_X; other names as they are."""
    if name.startswith("<SVC>_"):
        return [prefix + name.removeprefix("<SVC>_") for prefix in SERVICE_PREFIXES]
    return [name]


def pattern_prefix(name: str) -> str | None:
    """`KAFKA_CONFIG_<NAME>` -> KAFKA_CONFIG_, `OTEL_BSP_*` -> OTEL_BSP_; None for a name."""
    found = re.fullmatch(r"([A-Z][A-Z0-9_]*_)(?:<[A-Z]+>|\*)", name)
    return found[1] if found else None


def documented_names() -> set[str]:
    return {full for name in documented() if not pattern_prefix(name) for full in expand(name)}


def documented_patterns() -> set[str]:
    return {prefix for name in documented() if (prefix := pattern_prefix(name))}


def is_documented(name: str) -> bool:
    return name in documented_names() or any(
        name.startswith(prefix) for prefix in documented_patterns()
    )


# -- tests ----------------------------------------------------------------------------------


def test_the_settings_classes_are_found() -> None:
    names = {cls.__qualname__ for cls in settings_classes()}
    assert {"OrderSettings", "PaymentSettings"} <= names
    assert "ServiceSettings" not in names, "a base class is read through its subclasses"
    assert settings_env()["ORDER_SAGA_DEADLINE_S"] == "OrderSettings.saga_deadline_s"


_PROBES: dict[type, tuple[str, object]] = {
    str: ("probe-value", "probe-value"),
    int: ("4321", 4321),
    float: ("4321.5", 4321.5),
}


def _probe(annotation: object, default: object) -> tuple[str, object]:
    """A value for the environment, and what the field must read from it."""
    kinds = [k for k in typing.get_args(annotation) if k is not type(None)] or [annotation]
    kind = kinds[0]
    if kind is bool:
        return ("false", False) if default else ("true", True)
    if isinstance(kind, type) and kind in _PROBES:
        return _PROBES[kind]
    pytest.fail(f"no probe value for a setting of type {annotation!r}: add one to _PROBES")


@pytest.mark.parametrize("cls", settings_classes(), ids=lambda cls: cls.__qualname__)
def test_names_are_the_ones_pydantic_settings_reads(
    cls: type[BaseSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, field in cls.model_fields.items():
        for env in env_names(cls, field, name):
            text, value = _probe(field.annotation, field.default)
            with monkeypatch.context() as patch:
                patch.setenv(env, text)
                read = getattr(cls(), name)
                assert read == value, f"{cls.__qualname__}.{name} is not read from {env}"


def test_every_setting_is_documented() -> None:
    missing = sorted(
        f"{env} ({setting})" for env, setting in settings_env().items() if not is_documented(env)
    )
    assert not missing, f"add these to docs/configuration.md: {missing}"


def test_every_variable_read_directly_is_documented() -> None:
    missing = sorted(
        f"{env} ({path})"
        for env, path in read_directly().items()
        if env not in SYSTEM_VARIABLES and not is_documented(env)
    )
    assert not missing, f"add these to docs/configuration.md: {missing}"


def test_every_make_variable_is_documented() -> None:
    missing = sorted(name for name in make_variables() if not is_documented(name))
    assert not missing, f"add these make variables to docs/configuration.md: {missing}"


def test_every_documented_variable_is_read() -> None:
    known = (
        set(settings_env())
        | set(read_directly())
        | names_in_environment_readers()
        | names_used_by_make()
        | opentelemetry_names()
    )
    unread = sorted(name for name in documented_names() if name not in known)
    assert not unread, f"docs/configuration.md names variables nothing reads: {unread}"
    for prefix in documented_patterns():
        assert prefix in known or any(name.startswith(prefix) for name in known), (
            f"docs/configuration.md names {prefix}... and nothing reads it"
        )


def test_the_reference_is_parsed() -> None:
    names = documented()
    assert "<SVC>_LOG_LEVEL" in names and "KAFKA_CONFIG_<NAME>" in names
    assert {"ORDER_LOG_LEVEL", "PAYMENT_LOG_LEVEL"} <= documented_names()
    assert "KAFKA_CONFIG_" in documented_patterns()
