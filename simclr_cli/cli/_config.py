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
repeats the run. Its ``[plan]`` table (what the run derived from the flags) is ignored.

Only what click does not do lives here: reading the file, its tables and unknown keys, the
variable names, and saying where a value came from when a core error names its flag
(``describe_source``). Each value of a file is checked by its flag's own conversion, so a file
accepts and refuses what the command line does; the error names the key and the file.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
import typer.main
import yaml

from ..core import _env, _io
from ..core.errors import ConfigError
from ._console import print_error

#: Suffixes of the config files we read.
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")
#: Prefix of the environment variable of each flag: ``--batch-size`` -> ``SIMCLR_BATCH_SIZE``.
ENVIRONMENT_PREFIX = "SIMCLR_"
#: Variables the package already reads as switches of its own (``SIMCLR_SYNC_BN=reference`` picks
#: the reference synchronised batch norm); a flag of the same name gets no variable.
RESERVED_VARIABLES = _env.NAMES
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


def _takes_several(parameter: Any) -> bool:
    return bool(getattr(parameter, "multiple", False)) or parameter.nargs == -1


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
        data = _io.loads(text) if suffix == ".toml" else yaml.safe_load(text)
    except Exception as error:
        detail = " ".join(str(error).split())
        raise ConfigError(f"config file {path} does not parse: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold keys and values (a table or mapping)")
    return data


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
            if _takes_several(parameter) and not isinstance(value, list):
                value = [value]  # `logger = "csv"` for a flag that can be repeated.
            try:
                # The flag's own conversion, so that a file accepts what the command line does.
                parameter.process_value(ctx, value)
            except (typer.BadParameter, TypeError, ValueError) as refused:
                # Older click lets a TypeError out of int([1, 2]); both mean "not this value".
                reason = getattr(refused, "message", str(refused))
                raise ConfigError(
                    f"config file {path}: {scope}{key} = {value!r} does not suit "
                    f"{_long_flag(parameter) or parameter.name.upper()}: {reason}"
                ) from None
            values[parameter.name] = value
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
        # Raised while click parses the flags, before the command (and its error handling) runs.
        print_error(str(error))
        raise typer.Exit(error.exit_code) from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[SOURCE_FILE] = str(value)


def describe_source(ctx: Any, flag: str | None) -> str:
    """Where the value of ``flag`` came from, when the user has to know it to fix an error.

    Args:
        ctx: The context of the running command.
        flag: The long flag a core error is about (``SimCLRError.flag``), or ``None``.

    Returns:
        `` (set by KEY in config file FILE)`` or `` (set by the environment variable NAME)``
        when ``--config`` or ``SIMCLR_<FLAG>`` set the flag, else an empty string.
    """
    parameter = next(
        (item for item in ctx.command.params if flag is not None and flag in item.opts), None
    )
    if parameter is None or parameter.name is None:
        return ""
    source = getattr(ctx.get_parameter_source(parameter.name), "name", "")
    keys = ctx.meta.get(SOURCE_KEYS, {})
    if source == "DEFAULT_MAP" and parameter.name in keys:
        return f" (set by {keys[parameter.name]} in config file {ctx.meta.get(SOURCE_FILE)})"
    if source == "ENVIRONMENT":
        return f" (set by the environment variable {parameter.envvar})"
    return ""


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
