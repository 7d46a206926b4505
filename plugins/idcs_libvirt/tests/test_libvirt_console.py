"""The graphical console of a real QEMU guest in headless Chromium, through the core's noVNC
page and websocket bridge: the canvas shows the guest's text screen (not blank) and keys typed
in the page reach the guest's shell on tty1 (which creates a file the test reads back)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from idcs_libvirt import testing

from idcs_core.testing.kit import EngineUnderTest, Kit
from idcs_core.testing.kit_support import console_link

CHROMIUM = "/usr/bin/chromium"

# share of the canvas's sampled pixels that are not black: the guest's boot text and prompt
LIT_PIXELS = """() => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width) return -1;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0, seen = 0;
  for (let i = 0; i < d.length; i += 4 * 97) { seen++; if (d[i] + d[i + 1] + d[i + 2] > 120) lit++; }
  return lit / seen;
}"""


def _until(check: Callable[[], Any], what: Callable[[], str], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what()}: not within {timeout}s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def kit(backend: testing.Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    eut = EngineUnderTest(server_type="QEMU", server_addr=backend.uri, server_user="", server_pass="",
                          image=testing.IMAGE, unreachable_addr="qemu+tcp://127.0.0.1:9/system",
                          options=testing.host_options(), vm_spec={"cpu_num": 1, "ram_num": 128, "hdd_num": 1})
    k = Kit(eut, Path(tmp_path_factory.mktemp("lvt-console")))
    k.prefix = "lvt-con"
    k.hs = "lvt-con-host"
    try:
        k.start()
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1000, "height": 700})
        yield context.new_page()
        context.close()
        browser.close()


def test_vnc_console_in_chromium_shows_the_guest_and_takes_keys(kit: Kit, backend: testing.Backend,
                                                                 page: Any) -> None:
    vm = kit.create_vm("screen")
    with contextlib.closing(backend.connect()) as conn:
        assert "idcs-qemu-guest" in testing.guest_http(conn, vm, "/").text  # booted: its shells are up
    url = kit.api.get(kit.vm_path("remote", vm))["console_url"]
    assert url, "no console_url for a running VM"
    page_url, _ws, _protocols = console_link(url, kit.api.base_url)
    page.goto(page_url + "#" + url.split("#", 1)[1])
    _until(lambda: page.text_content("#bar") == "connected",
           lambda: f"noVNC connected (bar: {page.text_content('#bar')})", timeout=60)
    lit = _until(lambda: (v := page.evaluate(LIT_PIXELS)) > 0.01 and v, lambda: "the guest's screen on the canvas")
    assert lit > 0.01
    page.click("#screen canvas")
    marker = f"typed{int(time.time()) % 100000}"
    with contextlib.closing(backend.connect()) as conn:
        def typed() -> bool:
            return testing.guest_http(conn, vm, f"/cgi-bin/file?/{marker}").status_code == 200

        page.keyboard.type(f"touch disk/{marker}\n", delay=40)
        _until(typed, lambda: f"the file {marker} made by keys typed in the page", timeout=30)
