"""The typed engine facade: one method per hook with its timeout class, and the Protocol engines are held to."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from testlab import TestLabEngine

from idcs_core import engines, hookspecs
from idcs_core.hookspecs import hookimpl
from idcs_core.plugins import Engine
from idcs_core.types import HostSpec, VMInfo

HOOKS = [name for name in dir(hookspecs.EngineSpec) if not name.startswith("_")]


def _params(fn: Any) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_timeout_class_and_a_protocol_entry(hook: str) -> None:
    assert hook in engines.TIMEOUTS, f"{hook} has no timeout class in idcs_core.engines.TIMEOUTS"
    spec = getattr(hookspecs.EngineSpec, hook)
    proto = getattr(engines.EngineHooks, hook)
    assert _params(proto) == _params(spec), f"EngineHooks.{hook} differs from the hookspec"
    assert str(inspect.signature(proto).return_annotation) == str(inspect.signature(spec).return_annotation)


@pytest.mark.parametrize("hook", [h for h in HOOKS if h != "engine_describe"])
def test_every_hook_has_a_facade_method(hook: str) -> None:
    method = getattr(engines.EngineFacade, hook, None)
    assert method is not None and inspect.iscoroutinefunction(method), f"EngineFacade.{hook} is missing"
    spec_params = _params(getattr(hookspecs.EngineSpec, hook))
    facade_params = _params(method)
    if "vm_uuid" in spec_params:  # VM hooks take the VM (record or target), which carries vm_uuid and ref
        assert facade_params[0] == "vm", facade_params
        expected = [p for p in spec_params if p not in ("host", "vm_uuid", "ref")]
        assert facade_params[1:] == expected
    elif "spec" in spec_params and hook != "vm_create":  # update / reinstall: the VM, then its new spec
        assert facade_params[:2] == ["vm", "spec"]
    else:
        assert facade_params == spec_params


def test_no_service_calls_a_hook_by_its_name() -> None:
    """Services reach engines through the facade only: no ``core.call(host, "hook")`` left."""
    from pathlib import Path

    root = Path(engines.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name not in ("engines.py", "plugins.py") and "testing" not in p.parts
                 and ("core.call(" in p.read_text() or ".call(host" in p.read_text())]
    assert not offenders, offenders


def test_shipped_engines_fit_the_protocol() -> None:
    from idcs_example import engine as example
    from idcs_lxd import engine as lxd
    from idcs_oci import engine as oci

    for plugin in (TestLabEngine(), _instance(oci), _instance(lxd), _instance(example)):
        assert engines.check_engine(plugin) == [], type(plugin)


def _instance(module: Any) -> object:
    """The plugin object an engine module's entry point names (a class instance or the module)."""
    classes = [v for v in vars(module).values() if inspect.isclass(v) and v.__module__ == module.__name__
               and any(hasattr(getattr(v, n, None), "idcs_impl") for n in HOOKS)]
    return classes[0]() if classes else module


def test_check_engine_names_what_does_not_fit() -> None:
    class Wrong:
        @hookimpl
        def vm_status(self, host: HostSpec, vm_uuid: int, ref: str) -> VMInfo:  # vm_uuid is a str
            raise NotImplementedError

        @hookimpl
        def vm_power(self, host: HostSpec, name: str) -> VMInfo:  # no such parameter
            raise NotImplementedError

        @hookimpl
        def os_images(self, host: HostSpec) -> dict[str, str]:  # returns a list of OSImage
            raise NotImplementedError

    problems = engines.check_engine(Wrong())
    assert any(p.startswith("vm_status: parameter 'vm_uuid'") for p in problems), problems
    assert any(p.startswith("vm_power: parameter 'name'") for p in problems), problems
    assert any(p.startswith("os_images: returns") for p in problems), problems


def test_a_vm_hook_called_without_ref_is_refused() -> None:
    """The stop-gap that passed ``ref = vm_uuid`` is gone: a caller must say which VM it means."""
    import asyncio

    engine = Engine("Lab", TestLabEngine())
    spec = HostSpec("h", "Lab", "lab://h", "u", "lab-pass")
    with pytest.raises(TypeError, match="needs ref"):
        asyncio.run(engine.call("vm_status", spec, timeout=5, vm_uuid="x"))
