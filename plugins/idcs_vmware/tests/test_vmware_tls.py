"""vmrest over HTTPS (``vmrest -C``) with its self-signed certificate, against the stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from idcs_vmware.engine import VmwareEngine
from idcs_vmware.host import base_url
from vmrest_standin.launch import StandIn, start

from idcs_core import errors
from idcs_core.types import HostSpec

ENGINE = VmwareEngine()


@pytest.fixture(scope="module")
def https_vmrest() -> Iterator[StandIn]:
    standin = start(tls=True)
    yield standin
    standin.stop()


def host(standin: StandIn, verify: bool) -> HostSpec:
    return HostSpec(name="vmware-tls", server_type="VmwareWork", addr=standin.url, user=standin.user,
                    password=standin.password, options={"verify_tls": verify, "timeout": 3})


async def test_self_signed_https_needs_verify_tls_off(https_vmrest: StandIn) -> None:
    assert https_vmrest.url.startswith("https://")
    with pytest.raises(errors.HostUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
        await ENGINE.host_connect(host=host(https_vmrest, verify=True))
    status = await ENGINE.host_connect(host=host(https_vmrest, verify=False))
    assert status.online and status.vms_count == 0
    images = await ENGINE.os_images(host=host(https_vmrest, verify=False))
    assert [i.kind.value for i in images] == ["template"]
    await ENGINE.host_close(host=host(https_vmrest, verify=False))  # one record, its options changed: both pools go


def test_server_addr_defaults_to_https_and_port_8697() -> None:
    assert base_url("ws.lan") == "https://ws.lan:8697"
    assert base_url("http://127.0.0.1:18697/") == "http://127.0.0.1:18697"
    assert base_url("https://[fd00::5]") == "https://[fd00::5]:8697"
