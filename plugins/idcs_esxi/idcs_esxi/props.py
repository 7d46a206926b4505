"""Reading properties through the PropertyCollector: explicit paths, one request for many objects.

``read_view`` reads the given property paths of every object of a container view in one
``RetrievePropertiesEx`` (plus ``ContinueRetrievePropertiesEx`` pages for very large
inventories), so listing hundreds of VMs costs a constant number of round trips.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from idcs_esxi.client import Connection

PC = vmodl.query.PropertyCollector


@dataclass
class Row:
    """One object and the values of the paths read (unset paths are absent)."""

    obj: Any
    props: dict[str, Any]

    def get(self, path: str, default: Any = None) -> Any:
        return self.props.get(path, default)


def _view_spec(view: vim.view.ContainerView, kind: type, paths: Iterable[str]) -> PC.FilterSpec:
    traversal = PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
    return PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
        propSet=[PC.PropertySpec(type=kind, pathSet=list(paths), all=False)],
    )


def _object_spec(objs: Iterable[Any], kind: type, paths: Iterable[str]) -> PC.FilterSpec:
    return PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=o, skip=False) for o in objs],
                         propSet=[PC.PropertySpec(type=kind, pathSet=list(paths), all=False)])


def _retrieve(conn: Connection, specs: list[PC.FilterSpec]) -> list[Row]:
    rows: list[Row] = []
    result = conn.pc.RetrievePropertiesEx(specSet=specs, options=PC.RetrieveOptions())
    while result is not None:
        for oc in result.objects or []:
            rows.append(Row(oc.obj, {p.name: p.val for p in oc.propSet or []}))
        if not result.token:
            break
        result = conn.pc.ContinueRetrievePropertiesEx(token=result.token)
    return rows


def read_view(conn: Connection, view: vim.view.ContainerView, kind: type, paths: Iterable[str]) -> list[Row]:
    """Every object of ``view`` with the values of ``paths``, in one request."""
    return _retrieve(conn, [_view_spec(view, kind, paths)])


def read_views(conn: Connection, *queries: tuple[vim.view.ContainerView, type, Iterable[str]]) -> list[Row]:
    """Several views' objects in one request (e.g. hosts and VMs for the host status)."""
    return _retrieve(conn, [_view_spec(v, k, p) for v, k, p in queries])


def read_objects(conn: Connection, objs: list[Any], kind: type, paths: Iterable[str]) -> list[Row]:
    """Given objects with the values of ``paths``, in one request."""
    if not objs:
        return []
    return _retrieve(conn, [_object_spec(objs, kind, paths)])


def read_one(conn: Connection, obj: Any, kind: type, paths: Iterable[str]) -> dict[str, Any]:
    """One object's ``paths`` in one request."""
    rows = read_objects(conn, [obj], kind, paths)
    return rows[0].props if rows else {}


def option_dict(values: Any) -> dict[str, str]:
    """``config.extraConfig`` as a dict (the last value of a key wins)."""
    return {str(o.key): str(o.value) for o in values or []}
