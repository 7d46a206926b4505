"""Every hook is described in the plugin author's guide, and every engine hook is exercised by the kit.

The guide (docs/writing-an-engine.md) has one heading per hook, written as its signature
(``### `vm_power(host, vm_uuid, action) -> VMInfo` ``); these tests hold each heading to the
hookspec (name, arguments in order, return annotation), so adding, renaming or changing a
hook without updating the guide fails here. Each case of the conformance kit declares the
engine hooks it drives (``@exercises``); together they must cover every ``EngineSpec`` hook,
and the example engine, which runs the kit in CI, must implement every hook so that each
declaration is also checked at run time.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from idcs_core import hookspecs
from idcs_core.plugins import Engine
from idcs_core.testing.kit import KitTests

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "writing-an-engine.md"
HEADING = re.compile(r"^#{2,4} `(\w+)\(([^)]*)\) -> ([^`]+)`\s*$", re.MULTILINE)


def signatures(spec: type) -> dict[str, tuple[list[str], str]]:
    """Hook name -> (argument names in order, return annotation as written)."""
    result = {}
    for name in dir(spec):
        if name.startswith("_"):
            continue
        sig = inspect.signature(getattr(spec, name))
        result[name] = ([p for p in sig.parameters if p != "self"], str(sig.return_annotation))
    return result


def guide_headings() -> dict[str, tuple[list[str], str]]:
    found: dict[str, tuple[list[str], str]] = {}
    for name, args, returns in HEADING.findall(GUIDE.read_text(encoding="utf-8")):
        assert name not in found, f"the guide describes {name} twice"
        found[name] = ([a.strip() for a in args.split(",") if a.strip()], returns.strip())
    return found


def test_every_hook_has_a_heading_matching_its_hookspec() -> None:
    specs = signatures(hookspecs.EngineSpec) | signatures(hookspecs.EventSpec)
    headings = guide_headings()
    missing = sorted(set(specs) - set(headings))
    assert not missing, f"hooks not described in {GUIDE.name}: {missing}"
    stale = sorted(set(headings) - set(specs))
    assert not stale, f"{GUIDE.name} describes hooks that do not exist: {stale}"
    wrong = {name: (headings[name], specs[name]) for name in specs if headings[name] != specs[name]}
    assert not wrong, f"guide heading (args, return) differs from the hookspec: {wrong}"


def test_every_capability_is_in_the_guide_table() -> None:
    from idcs_core.plugins import CAPABILITIES

    text = GUIDE.read_text(encoding="utf-8")
    for capability, hooks in CAPABILITIES.items():
        row = f"| `{capability}` | " + ", ".join(f"`{h}`" for h in hooks) + " |"
        assert row in text, f"the capability table of the guide lacks the row {row!r}"


def kit_claims() -> dict[str, frozenset[str]]:
    """Kit case name -> the engine hooks it declares with @exercises."""
    return {name: getattr(member, "idcs_hooks", frozenset()) for name, member in vars(KitTests).items()
            if name.startswith("test_")}


def test_every_engine_hook_is_exercised_by_a_kit_case() -> None:
    claims = kit_claims()
    assert len(claims) >= 20, f"the kit has only {len(claims)} cases"
    covered = frozenset().union(*claims.values())
    missing = sorted(set(signatures(hookspecs.EngineSpec)) - covered)
    assert not missing, f"no kit case exercises {missing}: add a case (or an @exercises) to idcs_core/testing/kit.py"


def test_cases_without_hooks_prove_the_engine_is_never_called() -> None:
    """The only cases that claim no hook are the API's own promises, which assert no hook ran."""
    source = inspect.getsource(KitTests)
    for name, hooks in kit_claims().items():
        if hooks:
            continue
        body = inspect.getsource(getattr(KitTests, name))
        # os_images alone may be allowed: the core reads the host's list to refuse names it does not have
        assert re.search(r'kit\.hooks\.since\(mark\)( if h != "os_images"\])? == \[\]', body), (
            f"{name} claims no hook and does not prove none ran")
    assert source.count("@exercises(") == sum(1 for h in kit_claims().values() if h)


def test_the_example_engine_implements_every_hook() -> None:
    """So its kit run checks every @exercises declaration against real calls."""
    from idcs_example.engine import ExampleEngine

    engine = Engine("ExampleLab", ExampleEngine())
    assert set(signatures(hookspecs.EngineSpec)) == set(engine.hooks)


def test_every_data_type_field_is_in_the_guide() -> None:
    """Each dataclass of idcs_core.types has a heading, and each of its fields a row, in the guide."""
    import dataclasses

    from idcs_core import types

    text = GUIDE.read_text(encoding="utf-8")
    classes = [c for c in vars(types).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == types.__name__]
    assert len(classes) >= 10, classes
    for cls in classes:
        match = re.search(rf"^#### `{cls.__name__}`[^\n]*\n(.*?)(?=^#)", text, re.MULTILINE | re.DOTALL)
        assert match, f"the guide has no '#### `{cls.__name__}`' section"
        rows = [line for line in match.group(1).splitlines() if line.startswith("| `")]
        documented = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in documented]
        assert not missing, f"{cls.__name__} fields without a row in the guide: {missing}"
        stale = documented - {f.name for f in dataclasses.fields(cls)}
        assert not stale, f"the guide's {cls.__name__} table names fields it does not have: {sorted(stale)}"
