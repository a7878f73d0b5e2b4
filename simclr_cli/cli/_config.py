"""Settings from a config file and from ``SIMCLR_<FLAG>`` environment variables, for every command.

One mechanism for all commands: the application's group class (``ConfigurableGroup``, given to
``typer.Typer(cls=...)``) adds a ``--config FILE`` option to each command it holds and names an
environment variable after each flag (``--batch-size`` -> ``SIMCLR_BATCH_SIZE``). A command added
later gets both without code of its own.

Precedence, highest first: the command line, the environment (``SIMCLR_<FLAG>``), the config file,
the built-in defaults. Click resolves exactly this order when the file's values are its
``default_map``, so the eager ``--config`` option only has to load the file into it before the
other flags are read.

A file (``.toml``, ``.yaml`` or ``.yml``) holds keys at the top level, which any command that has
such a flag takes (and the others ignore), and tables named after commands (``[pretrain]``,
``[embed]``), which only that command reads and which win over the top level. Keys are the flag
names with ``_`` or ``-`` (``batch_size``, ``batch-size``) or the core's field names
(``learning_rate`` for ``--lr``, ``sync_batch_norm`` for ``--sync-bn``), so that a run folder's
``config.toml`` is a config file: ``simclr pretrain --config RUN/config.toml --out RUN2``
repeats the run. Its ``[plan]`` table (steps the run derived) is ignored.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main

from ..core.errors import ConfigError
from ._errors import print_error

#: Suffixes of the config files we read.
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
#: Prefix of the environment variable of each flag: ``--batch-size`` -> ``SIMCLR_BATCH_SIZE``.
ENVIRONMENT_PREFIX = "SIMCLR_"
#: Variables the package already reads as switches of its own (``SIMCLR_SYNC_BN=reference`` picks
#: the reference synchronised batch norm); a flag of the same name gets no variable.
RESERVED_VARIABLES = frozenset(
    {
        "SIMCLR_CACHE_BUDGET",
        "SIMCLR_CHANNELS_LAST",
        "SIMCLR_COLLECTIVE_TIMEOUT",
        "SIMCLR_DEBUG",
        "SIMCLR_MAX_IMAGE_PIXELS",
        "SIMCLR_NT_XENT",
        "SIMCLR_SYNC_BN",
        "SIMCLR_THREADS",
    }
)
#: Core field names (as in a run's config.toml) that the command line spells differently.
CORE_NAMES = {"learning_rate": "lr", "sync_batch_norm": "sync_bn"}
#: Keys a run's config.toml records about the run that no flag sets; reading them changes nothing.
DESCRIPTIVE_KEYS = frozenset({"world_size"})
#: Tables of a run's config.toml that describe what the run derived rather than what it was given.
IGNORED_TABLES = frozenset({"plan"})
#: Where a command's context remembers the config file and the key that set each parameter.
SOURCE_FILE, SOURCE_KEYS = "simclr_config_file", "simclr_config_keys"


def environment_variable(flag: str) -> str:
    """The environment variable of a long flag: ``--batch-size`` -> ``SIMCLR_BATCH_SIZE``."""
    return ENVIRONMENT_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _normal(key: str) -> str:
    return key.strip().replace("-", "_").lower()


def _long_flag(parameter: Any) -> str | None:
    flags = [name for name in getattr(parameter, "opts", []) if name.startswith("--")]
    return max(flags, key=len) if flags else None


def _is_option(parameter: Any) -> bool:
    return getattr(parameter, "param_type_name", "") == "option"


def _keys_of(command: Any) -> dict[str, Any]:
    """Every key that names one of ``command``'s parameters, normalised, mapped to it."""
    keys: dict[str, Any] = {}
    for parameter in command.params:
        if not parameter.name or parameter.name == "config" or not parameter.expose_value:
            continue
        keys[_normal(parameter.name)] = parameter
        for flag in getattr(parameter, "opts", []):
            if flag.startswith("--"):
                keys.setdefault(_normal(flag.lstrip("-")), parameter)
    for core_name, flag_name in CORE_NAMES.items():
        if flag_name in keys:
            keys.setdefault(core_name, keys[flag_name])
    return keys


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a ``.toml``, ``.yaml`` or ``.yml`` file into a dict.

    Raises:
        ConfigError: When the file is missing, of another kind, or does not parse.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise ConfigError(
            f"config file {path}: unknown kind {suffix or '(no suffix)'}; use .toml, .yaml or .yml"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport.
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:
        detail = " ".join(str(error).split())
        raise ConfigError(f"config file {path} does not parse: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold keys and values (a table or mapping)")
    return data


def _checked_value(parameter: Any, value: Any) -> Any:
    """``value`` if its type suits ``parameter``, as click expects it; else raise TypeError."""
    if getattr(parameter, "multiple", False) or getattr(parameter, "nargs", 1) == -1:
        items = value if isinstance(value, list | tuple) else [value]
        return [_checked_scalar(parameter, item) for item in items]
    return _checked_scalar(parameter, value)


def _kind(parameter: Any) -> tuple[str, list[str] | None]:
    """What a parameter takes: integer, float, boolean or text, and its choices if any."""
    # Recent Typer describes a parameter by its annotation; click-based Typer by a click type.
    annotation = getattr(getattr(parameter, "type_descriptor", None), "annotation", None)
    if annotation is not None:
        if isinstance(annotation, type) and issubclass(annotation, Enum):
            return "text", [str(item.value) for item in annotation]
        kinds = {bool: "boolean", int: "integer", float: "float"}
        return kinds.get(annotation, "text"), None
    click_type = getattr(parameter, "type", None)
    name = str(getattr(click_type, "name", "text"))
    choices = getattr(click_type, "choices", None)
    kind = next((k for k in ("integer", "float", "boolean") if name.startswith(k)), "text")
    return kind, None if choices is None else [str(choice) for choice in choices]


def _checked_scalar(parameter: Any, value: Any) -> Any:
    kind, choices = _kind(parameter)
    if isinstance(value, dict | list | tuple):
        raise TypeError("a single value")
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("a whole number")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError("a number")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise TypeError("true or false")
        return value
    # Text, paths and choices; a number is fine where text is expected (--gpus 2, a duration).
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError("text")
    text = value if isinstance(value, str) else str(value)
    if choices is not None and text not in choices:
        raise TypeError("one of " + ", ".join(choices))
    return text


def _command_names(ctx: Any) -> dict[str, Any]:
    group = ctx.parent.command if ctx.parent is not None else None
    commands = getattr(group, "commands", None) or {ctx.info_name: ctx.command}
    return dict(commands)


def config_defaults(ctx: Any, path: Path) -> dict[str, Any]:
    """The values ``path`` gives ``ctx``'s command, keyed by parameter name, checked.

    Raises:
        ConfigError: For a missing or unparseable file, an unknown key or table, a value of
            the wrong type or one the flag refuses.
    """
    data = read_config_file(path)
    name = ctx.info_name
    commands = _command_names(ctx)
    own_keys = _keys_of(ctx.command)
    shared: dict[str, Any] = {}
    table: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            if key == name:
                table = value
            elif key not in commands and key not in IGNORED_TABLES:
                known = ", ".join(sorted([*commands, *IGNORED_TABLES]))
                raise ConfigError(
                    f"config file {path}: unknown table [{key}]; tables are named after "
                    f"commands ({known})"
                )
        else:
            shared[key] = value
    others = set()
    for command_name, command in commands.items():
        if command_name != name:
            others |= set(_keys_of(command))

    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for scope, items in (("", shared), (f"[{name}] ", table)):
        for key, value in items.items():
            normal = _normal(str(key))
            if normal in DESCRIPTIVE_KEYS or value is None:
                continue  # YAML's null means "the default", as a missing key does.
            parameter = own_keys.get(normal)
            if parameter is None:
                if not scope and normal in others:
                    continue  # A top-level key for another command.
                hint = difflib.get_close_matches(normal, list(own_keys), n=1)
                suggestion = f" (did you mean {hint[0]}?)" if hint else ""
                raise ConfigError(
                    f"config file {path}: unknown key {scope}{key} for simclr {name}{suggestion}"
                )
            try:
                checked = _checked_value(parameter, value)
            except TypeError as expected:
                raise ConfigError(
                    f"config file {path}: {scope}{key} = {value!r} should be {expected}"
                ) from None
            values[parameter.name] = checked
            keys[parameter.name] = f"{scope}{key}"
    ctx.meta[SOURCE_KEYS] = keys
    return values


def _load_config(ctx: typer.Context, value: str | None) -> None:
    # Eager, so it runs before the other parameters read their defaults from default_map.
    if not value or getattr(ctx, "resilient_parsing", False):
        return
    try:
        defaults = config_defaults(ctx, Path(value))
    except ConfigError as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[SOURCE_FILE] = str(value)


def _current_context() -> Any:
    # Recent Typer carries its own copy of click; older Typer uses click itself.
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - click-based Typer.
        from click import get_current_context  # type: ignore[no-redef]
    return get_current_context(silent=True)


def describe_source(message: str) -> str:
    """Say which config file key or environment variable set the flag an error names.

    A core error names the flag (``--image-size 0 is too small``); when the value came from
    ``--config`` or ``SIMCLR_<FLAG>``, the user has to know where to fix it.
    """
    ctx = _current_context()
    if ctx is None:
        return message
    for parameter in ctx.command.params:
        flag = _long_flag(parameter)
        if not flag or not re.search(re.escape(flag) + r"(?![\w-])", message):
            continue
        source = getattr(ctx.get_parameter_source(parameter.name), "name", "")
        if source == "DEFAULT_MAP" and parameter.name in ctx.meta.get(SOURCE_KEYS, {}):
            key = ctx.meta[SOURCE_KEYS][parameter.name]
            return f"{message} (set by {key} in config file {ctx.meta.get(SOURCE_FILE)})"
        if source == "ENVIRONMENT":
            return f"{message} (set by the environment variable {parameter.envvar})"
    return message


def add_config_support(command: Any) -> None:
    """Give ``command`` a ``--config FILE`` option and a ``SIMCLR_<FLAG>`` variable per flag."""
    if any(parameter.name == "config" for parameter in command.params):
        return
    for parameter in command.params:
        flag = _long_flag(parameter)
        if _is_option(parameter) and flag and not parameter.envvar:
            if environment_variable(flag) in RESERVED_VARIABLES:
                continue
            parameter.envvar = environment_variable(flag)
            # Listing a variable under every flag would double the help; --config's help and the
            # README state the rule once.
            parameter.show_envvar = False
    command.params.append(_config_option())


def _config_option() -> Any:
    """The ``--config`` option, built by Typer itself so that it fits the installed version."""
    builder = typer.Typer(add_completion=False)

    @builder.command()
    def _options(
        config: Annotated[
            str | None,
            typer.Option(
                "--config",
                metavar="FILE",
                help="Read flags from a .toml or .yaml file (a run's config.toml works). "
                "Precedence: command line > SIMCLR_<FLAG> environment variables > this file > "
                "defaults.",
                is_eager=True,
                expose_value=False,
                callback=_load_config,
                envvar=environment_variable("--config"),
                show_envvar=False,
                show_default=False,
            ),
        ] = None,
    ) -> None:
        pass

    params = typer.main.get_command(builder).params
    return next(parameter for parameter in params if parameter.name == "config")


class ConfigurableGroup(typer.core.TyperGroup):
    """Typer's group, with ``--config`` and environment variables added to every command."""

    def __init__(
        self, *args: Any, commands: dict[str, Any] | Sequence[Any] | None = None, **kwargs: Any
    ):
        super().__init__(*args, commands=commands, **kwargs)
        for command in self.commands.values():
            add_config_support(command)
