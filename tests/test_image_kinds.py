"""Images, templates and ISOs: the listing shows each one's kind; create takes only the host's images
and templates, ISO mount only its ISOs, datastore paths included, and anything else is a 400 before a hook runs."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from helpers import create_vm
from testlab import TestLabEngine

from idcs_core.testing.server import ApiClient

DATASTORE_ISO = "[datastore1] iso/debian 12.iso"
TEMPLATE = "[datastore1] templates/debian 12"


def _body(vm: str, os_name: str) -> dict[str, object]:
    return {"vm_uuid": vm, "os_name": os_name, "cpu_num": 1, "ram_num": 256, "hdd_num": 1}


def test_listing_shows_each_kind(admin: ApiClient, host: str) -> None:
    files = {i["file"]: i["kind"] for group in admin.get(f"/api/client/os-images/{host}").values() for i in group}
    assert files["ubuntu-22.04"] == "image"
    assert files[TEMPLATE] == "template"
    assert files[DATASTORE_ISO] == "iso" and files["rescue.iso"] == "iso"


def test_create_from_a_template_with_a_datastore_path(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "tpl1", os_name=TEMPLATE)
    assert admin.get(f"/api/client/detail/{host}/tpl1")["os_name"] == TEMPLATE
    assert lab.hosts[f"lab://{host}"].vms["tpl1"].spec.os_name == TEMPLATE  # reached the engine as listed


@pytest.mark.parametrize(("os_name", "says"), [
    (DATASTORE_ISO, "is an iso"),  # an ISO is mounted, not created from
    ("rescue.iso", "is an iso"),
    ("no-such-image", "is not an image or template"),
    ("[datastore1] iso/other 12.iso", "is not an image or template"),
    ("a b", "is not an image or template"),
])
def test_create_refuses_what_is_not_an_image_of_the_host(admin: ApiClient, host: str, lab: TestLabEngine,
                                                         os_name: str, says: str) -> None:
    before = admin.get("/api/users/current")["quota"]["used_vms"]
    admin.get(f"/api/client/os-images/{host}")  # the lab host exists
    calls = list(lab.hosts[f"lab://{host}"].calls)
    status, body = admin.call("POST", f"/api/client/create/{host}", _body("k1", os_name))
    assert (status, body["code"]) == (400, 400), body
    assert says in body["msg"] and "os_name" in body["msg"], body
    new_calls = lab.hosts[f"lab://{host}"].calls[len(calls):]
    assert set(new_calls) <= {"os_images"}, new_calls  # no create reached the engine
    assert admin.call("GET", f"/api/client/detail/{host}/k1")[1]["code"] == 1002
    assert admin.get("/api/users/current")["quota"]["used_vms"] == before


@pytest.mark.parametrize("os_name", ["../../etc/passwd", "/etc/passwd", "C:/images/x.iso", "[ds] ../x.iso",
                                     "x\x00.iso", "x\n.iso", "a\x7fb.iso", "a\u202eb.iso", "a\\b", "$(id).iso"])
def test_unsafe_names_are_refused_before_any_hook(admin: ApiClient, host: str, lab: TestLabEngine,
                                                  os_name: str) -> None:
    create_vm(admin, host, "safe1")
    lab_host = lab.hosts[f"lab://{host}"]
    calls = len(lab_host.calls)
    status, body = admin.call("POST", f"/api/client/create/{host}", _body("k2", os_name))
    assert (status, body["code"]) == (400, 400), body
    status, body = admin.call("POST", f"/api/client/iso/mount/{host}/safe1", {"iso_name": os_name})
    assert (status, body["code"]) == (400, 400), body
    assert lab_host.calls[calls:] == []


def test_iso_mount_takes_datastore_paths_and_only_isos(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "cd1")
    vm = lab.hosts[f"lab://{host}"].vms["cd1"]
    admin.post(f"/api/client/iso/mount/{host}/cd1", {"iso_name": DATASTORE_ISO})
    assert vm.cdrom == DATASTORE_ISO  # exactly as listed: spaces, brackets and slashes kept
    assert admin.get(f"/api/client/detail/{host}/cd1")["isos"] == [DATASTORE_ISO]
    admin.delete(f"/api/client/iso/unmount/{host}/cd1/{quote(DATASTORE_ISO)}")
    assert vm.cdrom is None
    assert admin.get(f"/api/client/detail/{host}/cd1")["isos"] == []

    for name, says in (("debian-12", "is an image"), (TEMPLATE, "is a template"),
                       ("other.iso", "is not an iso")):
        status, body = admin.call("POST", f"/api/client/iso/mount/{host}/cd1", {"iso_name": name})
        assert (status, body["code"]) == (400, 400), body
        assert says in body["msg"] and "iso_name" in body["msg"], body
    assert vm.cdrom is None


def test_reinstall_takes_only_images(admin: ApiClient, host: str, lab: TestLabEngine) -> None:
    create_vm(admin, host, "re1")
    status, body = admin.call("POST", f"/api/client/reinstall/{host}/re1", {"os_name": "rescue.iso"})
    assert (status, body["code"]) == (400, 400), body
    assert admin.get(f"/api/client/detail/{host}/re1")["os_name"] == "ubuntu-22.04"
    admin.run_task("POST", f"/api/client/reinstall/{host}/re1", {"os_name": "debian-12"})
    assert lab.hosts[f"lab://{host}"].vms["re1"].spec.os_name == "debian-12"
