"""Every setting in the README table can be set from the file, the environment and (where listed)
a flag of a real command line, with the precedence flag > environment > file > default."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import pytest

from adapter.cli import build_parser, flags_of
from adapter.settings import (
    FLAGS,
    Key,
    SettingsError,
    keys,
    load_settings,
    markdown_table,
    value_of,
)

README = Path(__file__).parent.parent / "README.md"
KEYS = list(keys())
REQUIRED = {
    "run": ["--source", "s", "--out", "o"],
    "audit": ["Patient/p1"],
    "backfill": ["--out", "o"],
}


def _secret_free(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _file_tree(key: Key, value: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    node = tree
    for part in key.path[:-1]:
        node = node.setdefault(part, {})
    node[key.path[-1]] = list(value) if isinstance(value, tuple) else value
    return tree


def _commands_with(dotted: str) -> list[tuple[str, argparse.Action]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.dest == dotted:
                found.append((name, action))
    return found


def _examples(key: Key) -> list[Any]:
    examples = key.info.examples or []
    assert len(examples) == 2 and examples[0] != examples[1], f"{key.dotted}: two examples"
    return list(examples)


def test_the_readme_table_is_the_model() -> None:
    assert markdown_table() in README.read_text(encoding="utf-8")


def test_environment_names_are_unique_and_follow_the_rule() -> None:
    names = [key.env for key in KEYS]
    assert len(names) == len(set(names))
    for key in KEYS:
        section = key.path[-2].upper()
        assert key.env == f"REMS_ADAPTER_{section}_{key.path[-1].upper()}"
    assert set(FLAGS) <= {key.dotted for key in KEYS}


@pytest.mark.parametrize("key", [k for k in KEYS if not k.secret], ids=lambda k: k.dotted)
def test_file_then_environment_then_flag(key: Key) -> None:
    first, second = _examples(key)
    from_file = load_settings(file_data=_file_tree(key, first))
    assert value_of(from_file.settings, key) == first
    assert from_file.origins.of(key.dotted) == "file"

    both = load_settings(file_data=_file_tree(key, first), environ={key.env: _env_text(second)})
    assert value_of(both.settings, key) == second
    assert both.origins.of(key.dotted) == key.env

    commands = _commands_with(key.dotted)
    assert bool(commands) == (key.flag is not None), f"{key.dotted}: flag {key.flag}"
    for command, action in commands:
        if action.const is not None:  # a switch (--quiet, --no-derive-anc, --insecure-admin)
            argv = [command, *REQUIRED.get(command, []), key.flag or ""]
            wanted: Any = action.const
            assert wanted != second, f"{key.dotted}: examples must let the switch show"
        else:
            values = first if isinstance(first, tuple) else (first,)
            argv = [command, *REQUIRED.get(command, [])]
            for value in values:
                argv += [key.flag or "", _env_text(value)]
            wanted = first
        args = build_parser().parse_args(argv)
        loaded = load_settings(
            file_data=_file_tree(key, first),
            environ={key.env: _env_text(second)},
            flags=flags_of(args),
        )
        assert value_of(loaded.settings, key) == wanted, argv
        assert loaded.origins.of(key.dotted) == key.flag


@pytest.mark.parametrize("key", [k for k in KEYS if k.secret], ids=lambda k: k.dotted)
def test_secrets_come_only_from_the_environment(key: Key) -> None:
    loaded = load_settings(environ={key.env: "s3cret"})
    assert _secret_free(value_of(loaded.settings, key)) == "s3cret"
    assert "s3cret" not in repr(loaded.settings)
    with pytest.raises(SettingsError, match=re.escape(key.env)):
        load_settings(file_data=_file_tree(key, "s3cret"))
    assert key.flag is None and not _commands_with(key.dotted)


def test_defaults_apply_when_nothing_is_given() -> None:
    loaded = load_settings()
    for key in KEYS:
        assert _secret_free(value_of(loaded.settings, key)) == key.default
        assert loaded.origins.of(key.dotted) == "default"


def test_unknown_rems_adapter_variables_are_ignored() -> None:
    env = {"REMS_ADAPTER_SOMETHING_ELSE": "1", **{k: v for k, v in os.environ.items()}}
    load_settings(environ=env)
