"""The one place that sets up Hydra's compose API, and the one that turns its errors into a line.

`compose(overrides)` is what `plan`, `eval`, `resume`, the launcher check, the training entry's
up-front validation and the tests all use. A team's own config folder joins the search path
with `hydra.searchpath=[file://DIR]` (an override, as on Hydra's command line) or `--config-dir
DIR` (turned into that override by the CLI): its `DIR/exp/*.yaml` are then experiments too.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from orchestrator.config.paths import CONF_DIR, declared_experiments
from orchestrator.errors import ConfigError

SEARCHPATH = "hydra.searchpath"


def compose(overrides: Sequence[str] = (), *, with_hydra: bool = False) -> DictConfig:
    """conf/ composed with `overrides`; `with_hydra` keeps the `hydra` node (launcher, runtime
    choices) as a run would see it."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from orchestrator.config.schema import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)


def search_dirs(overrides: Sequence[str]) -> list[Path]:
    """The folders a `hydra.searchpath=[file://DIR, ...]` override adds (pkg:// entries have no folder)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    dirs = []
    for override in OverridesParser.create().parse_overrides([o for o in overrides if o.startswith(SEARCHPATH)]):
        if override.get_key_element() == SEARCHPATH:
            value = override.value()
            for entry in value if isinstance(value, list) else [value]:
                if str(entry).startswith("file://"):
                    dirs.append(Path(str(entry).removeprefix("file://")))
    return dirs


def with_config_dirs(overrides: Sequence[str], dirs: Sequence[str | Path]) -> list[str]:
    """`overrides` with `dirs` added to Hydra's search path (merged into a `hydra.searchpath`
    override already there, which must then be the last of its kind)."""
    if not dirs:
        return list(overrides)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    entries = [f"file://{Path(d).resolve()}" for d in dirs]
    kept = []
    for line in overrides:
        if line.startswith(SEARCHPATH):
            (override,) = OverridesParser.create().parse_overrides([line])
            value = override.value()
            entries = [*(value if isinstance(value, list) else [value]), *entries]
        else:
            kept.append(line)
    quoted = ",".join("'" + str(e).replace("\\", "\\\\").replace("'", "\\'") + "'" for e in entries)
    return [*kept, f"{SEARCHPATH}=[{quoted}]"]


def all_experiments(overrides: Sequence[str] = ()) -> list[str]:
    """Experiments of conf/exp/ and of every folder on the search path the overrides add."""
    return declared_experiments(search_dirs=search_dirs(overrides))


def config_error(exc: BaseException, overrides: Sequence[str] = ()) -> ConfigError | None:
    """A Hydra/OmegaConf composition error as a ConfigError naming the key (None: not one).

    Reads the exceptions' fields, not their text: MissingConfigException.missing_cfg_file and
    .options for a config group value that does not exist, and for a bad key or value the
    OmegaConf error (directly, or as a ConfigCompositionException's __cause__): .full_key and
    the first line of .msg (OmegaConf appends the key and types on the lines after it)."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        if group == "exp":
            known = sorted(set(exc.options or ()) | set(all_experiments(overrides)))
            return ConfigError("unknown experiment", where=f"+exp={name}",
                               fix=f"use one of {', '.join(known)}; files in conf/exp/ or DIR/exp/ of --config-dir DIR")
        options = f"use one of {', '.join(exc.options)}" if exc.options else "check the name"
        return ConfigError(f"no config {exc.missing_cfg_file!r}", where=f"{group}={name}" if group else name,
                           fix=f"{options} (files in conf/{group}/)")
    cause = omegaconf_cause(exc)
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or getattr(cause, "key", None)
        msg = getattr(cause, "msg", None) or type(cause).__name__
        fix = "check the key's spelling and the value against conf/ and orchestrator/config/schema.py"
        schema = getattr(cause, "object_type", None)
        choice = _choice_type(schema, getattr(cause, "key", None))
        if choice is not None:
            fix = f"set {key} to one of {', '.join(c.value for c in choice)}"
        elif isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and dataclasses.is_dataclass(schema):
            known = [f.name for f in dataclasses.fields(schema)]
            near = difflib.get_close_matches(str(getattr(cause, "key", "")), known, n=1)
            fix = (f"did you mean {near[0]}? " if near else "") + f"known keys: {', '.join(known)}"
        return ConfigError(msg.splitlines()[0], where=str(key) if key else "config",
                           fix=f"{fix}; --cfg job shows the composed config")
    if isinstance(exc, OverrideParseException):
        return ConfigError(f"cannot parse override: {exc.message.splitlines()[0]}", where="command line",
                           fix="write overrides as key=value, group=option or +exp=NAME")
    if isinstance(exc, HydraException):
        first = (str(exc).split("\n\n")[0] or type(exc).__name__).replace("\n", " ")
        return ConfigError(first, where="config",
                           fix="check the key's spelling and group names in conf/; --cfg job shows the config")
    return None


def omegaconf_cause(exc: BaseException) -> BaseException:
    """The OmegaConf error behind a Hydra one (its __cause__, or the __context__ it was raised
    while handling: an error inside an exp file's composition), else `exc` itself."""
    from omegaconf.errors import OmegaConfBaseException

    for inner in (exc.__cause__, exc.__context__):
        if isinstance(inner, OmegaConfBaseException):
            return inner
    return exc


def _choice_type(schema, key) -> type | None:
    """The Choice enum a schema's field `key` is typed with (None: not one)."""
    import typing

    from orchestrator.config.schema import Choice

    if not (dataclasses.is_dataclass(schema) and isinstance(key, str)):
        return None
    hint = typing.get_type_hints(schema).get(key)
    return hint if isinstance(hint, type) and issubclass(hint, Choice) else None
