"""Images: the host's template VMs (named with the ``template_prefix`` option), cloned on create."""

from __future__ import annotations

from idcs_core.types import ImageKind, OSImage
from idcs_vmware.client import Vmrest
from idcs_vmware.lifecycle import templates

FAMILIES = ("ubuntu", "debian", "centos", "rocky", "alma", "fedora", "windows", "freebsd")


def family(name: str) -> str:
    lowered = name.lower()
    return next((f for f in FAMILIES if f in lowered), "other")


async def os_images(api: Vmrest) -> list[OSImage]:
    return [OSImage(name=name, file=name, family=family(name), kind=ImageKind.TEMPLATE)
            for name in sorted(await templates(api))]
