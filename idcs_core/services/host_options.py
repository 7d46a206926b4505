"""Engine host options: declared by each engine, validated, defaulted, typed and kept secret by the core.

An engine declares the options it understands in ``engine_describe()["options"]`` as a list of
``idcs_core.types.HostOption`` (typed). The first contract's form, a mapping of name to a one-line
help text, is still accepted (untyped): each is then a ``str`` option, and keys it does not name
are let through as before.

What an operator sends as a host's ``options`` is checked here on create and update: a value of
the wrong type, a choice not offered, a required option left out or (typed engines) a name the
engine does not declare is a 400 naming the option, and nothing is saved. Values are stored
coerced to their type; ``secret`` ones are stored encrypted (the core's fernet key, as
``server_pass``) and shown in answers only as ``"set"`` (or ``""``). Engines receive, in
``HostSpec.options``, every declared option with its default filled in and its secret decrypted.

The core's own per-host settings (``ports_start``/``ports_close``, ``public_addr``,
``server_plan``, ``proxy_endpoint``, ``token_any_port``) live apart, in ``Host.options``; the
engine's in ``Host.engine_options``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from idcs_core import errors
from idcs_core.types import HostOption, OptionType

if TYPE_CHECKING:
    from idcs_core.plugins import Engine
    from idcs_core.security import Keys

# The core's own per-host settings: top-level fields of a host (and, for token_any_port, also
# accepted inside ``options``); never handed to an engine that declares its options.
CORE_SETTINGS = ("ports_start", "ports_close", "public_addr", "server_plan", "proxy_endpoint", "token_any_port")
SECRET_MARK = "$secret"  # a stored secret option: {"$secret": <fernet token>}
SHOWN_SET = "set"
_INT = re.compile(r"^[+-]?[0-9]{1,18}$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
MAX_TEXT = 16384  # a PEM certificate fits


@dataclass(frozen=True)
class EngineOptions:
    """The options one engine declares; ``typed`` False for the first contract's mapping form."""

    engine: str
    options: Mapping[str, HostOption]
    typed: bool

    def public(self) -> list[dict[str, Any]]:
        """The declarations as the API shows them (``/api/system/engine/detail``)."""
        return [_option_dict(o) for o in self.options.values()]


def declared(engine: Engine) -> EngineOptions:
    """What ``engine`` declares in ``engine_describe()["options"]`` (list of HostOption, or a mapping)."""
    raw = engine.description.get("options")
    if isinstance(raw, list | tuple):
        options = {o.name: o for o in raw if isinstance(o, HostOption)}
        return EngineOptions(engine.name, options, typed=True)
    if isinstance(raw, Mapping):
        return EngineOptions(engine.name, {str(k): HostOption(str(k), help=str(v)) for k, v in raw.items()},
                             typed=False)
    return EngineOptions(engine.name, {}, typed=False)


def coerce(option: HostOption, value: Any) -> Any:
    """``value`` as ``option``'s type, or ``ValueError`` saying what was expected."""
    kind = OptionType(option.type)
    if kind is OptionType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        text = str(value).strip().lower() if isinstance(value, str) else None
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("must be true or false")
    if kind is OptionType.INT:
        if isinstance(value, bool):
            raise ValueError("must be a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value.strip())
        raise ValueError("must be a whole number")
    if kind is OptionType.CHOICE:
        text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
        if text is None or text not in option.choices:
            raise ValueError(f"must be one of {', '.join(option.choices)}")
        return text
    # STR: text; numbers are written as text; a list of texts becomes comma-separated
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        value = ",".join(v.strip() for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be text")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise ValueError(f"must be text of at most {MAX_TEXT} characters")
    return value


def validate(engine: EngineOptions, stored: Mapping[str, Any], given: Mapping[str, Any], keys: Keys
             ) -> dict[str, Any]:
    """The engine options to store once ``given`` is applied over ``stored``; 400 naming the option.

    A ``None`` value removes the option (its default applies again). Secret values are encrypted.
    """
    result = dict(stored)
    for name, value in given.items():
        if _is_sealed(value):  # the stored form of a secret: never taken from a request
            raise errors.BadRequest(f"options.{name}: {SECRET_MARK} is reserved")
        option = engine.options.get(name)
        if option is None:
            if engine.typed:
                known = ", ".join(sorted(engine.options)) or "none"
                raise errors.BadRequest(f"options.{name}: not an option of the {engine.engine} engine "
                                        f"(its options: {known})")
            result.pop(name, None) if value is None else result.__setitem__(name, value)
            continue
        if value is None:
            result.pop(name, None)
            continue
        try:
            typed_value = coerce(option, value)
        except ValueError as exc:
            raise errors.BadRequest(f"options.{name}: {exc} ({option.help})" if option.help
                                    else f"options.{name}: {exc}") from None
        result[name] = {SECRET_MARK: keys.encrypt(str(typed_value))} if option.secret else typed_value
    missing = [o.name for o in engine.options.values()
               if o.required and o.default is None and result.get(o.name) in (None, "")]
    if missing:
        raise errors.BadRequest(f"options.{missing[0]}: required by the {engine.engine} engine "
                                f"({engine.options[missing[0]].help or 'no default'})")
    return result


def for_engine(engine: EngineOptions, stored: Mapping[str, Any], keys: Keys) -> dict[str, Any]:
    """``HostSpec.options``: stored values (secrets decrypted, typed) with declared defaults filled in."""
    result: dict[str, Any] = {}
    for name, declared in engine.options.items():
        if declared.default is not None:
            result[name] = declared.default
    for name, value in stored.items():
        option = engine.options.get(name)
        if option is None and engine.typed:
            continue  # an option the engine no longer declares
        plain = _reveal(value, keys)
        if option is not None:
            try:
                plain = coerce(option, plain)
            except ValueError:
                pass  # stored before the engine typed it: handed over as it was
        result[name] = plain
    return result


def for_answer(engine: EngineOptions, stored: Mapping[str, Any]) -> dict[str, Any]:
    """The options as answers show them: stored values over defaults, secrets as ``"set"`` or ``""``."""
    shown: dict[str, Any] = {name: o.default for name, o in engine.options.items()
                             if o.default is not None and not o.secret}
    for name, value in stored.items():
        option = engine.options.get(name)
        secret = (option is not None and option.secret) or _is_sealed(value)
        shown[name] = (SHOWN_SET if value not in (None, "") else "") if secret else value
    for name, option in engine.options.items():
        if option.secret and name not in shown:
            shown[name] = ""
    return shown


def json_schema(engine: EngineOptions) -> dict[str, Any]:
    """The engine's options as a JSON Schema object (the OpenAPI document shows one per engine)."""
    props: dict[str, Any] = {}
    for option in engine.options.values():
        kind = OptionType(option.type)
        prop: dict[str, Any] = {"type": {OptionType.BOOL: "boolean", OptionType.INT: "integer"}.get(kind, "string"),
                                "description": option.help}
        if kind is OptionType.CHOICE:
            prop["enum"] = list(option.choices)
        if option.default is not None:
            prop["default"] = option.default
        if option.secret:
            prop["writeOnly"] = True
            prop["description"] = f"{option.help} (secret: stored encrypted, shown as \"set\")".strip()
        props[option.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": props,
                              "additionalProperties": not engine.typed}
    required = [o.name for o in engine.options.values() if o.required and o.default is None]
    if required:
        schema["required"] = required
    return schema


def _is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SECRET_MARK}


def _reveal(value: Any, keys: Keys) -> Any:
    return keys.decrypt(value[SECRET_MARK]) if _is_sealed(value) else value


def _option_dict(option: HostOption) -> dict[str, Any]:
    data = asdict(option)
    data["type"] = OptionType(option.type).value
    data["choices"] = list(option.choices)
    if option.secret:
        data["default"] = None
    return data
