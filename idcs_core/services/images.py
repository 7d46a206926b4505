"""A host's images, templates and ISOs, and the rule that a VM is made only from what the host lists.

``os_name`` on create and reinstall must be one of the host's images or templates, ``iso_name`` on
ISO mount one of its ISOs (``OSImage.kind``), compared exactly as the engine listed it. That is
checked here, before any task or hook that would use the name, so a name the host does not have
is a 400 of the contract and never reaches the engine. The syntax rule (no ``..``, no control
characters...) is ``idcs_core.validation.image_ref``, applied earlier by the API.

Listing images may be slow on some back ends (a vSphere datastore browse), so each host's list is
kept for ``CACHE_SECONDS``; a name not found in a kept list is looked up again in a fresh one (an
image added a moment ago is found).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from idcs_core import errors
from idcs_core.types import ImageKind, OSImage

if TYPE_CHECKING:
    from idcs_core.context import CoreContext
    from idcs_core.db.models import Host

CACHE_SECONDS = 60.0
CREATE_KINDS = frozenset({ImageKind.IMAGE, ImageKind.TEMPLATE})
ISO_KINDS = frozenset({ImageKind.ISO})


def kind_of(image: OSImage) -> ImageKind:
    """The image's kind; an engine of the first contract (no ``kind``) gives images, plus ISOs by name."""
    kind = getattr(image, "kind", None)
    if kind is None:
        return ImageKind.ISO if str(image.file).lower().endswith(".iso") else ImageKind.IMAGE
    return ImageKind(kind)


class ImageCatalog:
    """Each host's ``os_images``, kept a short while, and the membership checks built on it."""

    def __init__(self, core: CoreContext) -> None:
        self.core = core
        self._kept: dict[int, tuple[float, list[OSImage]]] = {}

    async def list(self, host: Host, *, fresh: bool = False) -> list[OSImage]:
        """The host's images as its engine lists them (from the kept copy unless ``fresh`` or stale)."""
        kept = self._kept.get(host.id)
        if not fresh and kept is not None and time.monotonic() - kept[0] < CACHE_SECONDS:
            return kept[1]
        images = list(await self.core.engines.os_images(host))
        self._kept[host.id] = (time.monotonic(), images)
        return images

    def forget(self, host_id: int) -> None:
        """Drop a host's kept list (the host changed or went)."""
        self._kept.pop(host_id, None)

    async def require(self, host: Host, name: str, kinds: frozenset[ImageKind], field: str) -> OSImage:
        """The image named ``name`` if the host lists it with one of ``kinds``; else ``BadRequest`` naming
        ``field``. An engine that cannot list images is taken at its word (its own check applies)."""
        if not self.core.supports(host, "os_images"):
            return OSImage(name=name, file=name, kind=next(iter(kinds)))
        image = _find(await self.list(host), name)
        if image is None:
            image = _find(await self.list(host, fresh=True), name)
        wanted = " or ".join(sorted(k.value for k in kinds))
        if image is None:
            raise errors.BadRequest(f"{field}: {name!r:.300} is not {_a(wanted)} of host {host.server_name} "
                                    f"(see GET /api/client/os-images/{host.server_name})")
        kind = kind_of(image)
        if kind not in kinds:
            hint = ("mount it with POST /api/client/iso/mount" if kind is ImageKind.ISO
                    else "create a VM from it instead")
            raise errors.BadRequest(f"{field}: {name!r:.300} is {_a(kind.value)} of host {host.server_name}, "
                                    f"not {_a(wanted)}: {hint}")
        return image


def _find(images: list[OSImage], name: str) -> OSImage | None:
    return next((image for image in images if image.file == name), None)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
