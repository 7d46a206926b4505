"""The console pages in a real browser (headless Chromium driven by Playwright):

- noVNC through the core's bridge to a real Xvnc: the canvas shows the remote screen and a
  key typed in the page reaches an X client on that screen;
- the xterm.js terminal into a real Docker container: ``vi`` and ``top`` render and take keys.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from consolelab import ConsoleLabEngine
from helpers import create_vm
from testlab import PASSWORD

from idcs_core.plugins import PluginRegistry
from idcs_core.testing.kit_support import console_link
from idcs_core.testing.server import LiveServer
from idcs_core.testing.xvnc import COLOUR, XvncServer, xvnc_server
from idcs_core.types import ConsoleEndpoint, ConsoleKind

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    p.on("response", lambda resp: errors.append(f"{resp.status} {resp.url}") if resp.status >= 400 else None)
    p.script_errors = errors
    yield p
    context.close()


def _until(check: Callable[[], Any], what: str | Callable[[], str], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what if isinstance(what, str) else what()}: not within {timeout}s"
        time.sleep(0.1)


# ---------------------------------------------------------------------- noVNC to Xvnc


@pytest.fixture(scope="module")
def vnc() -> Iterator[XvncServer]:
    with xvnc_server() as server:
        yield server


@pytest.fixture(scope="module")
def vnc_core(vnc: XvncServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    lab = ConsoleLabEngine()
    lab.vnc = ConsoleEndpoint(ConsoleKind.VNC, "127.0.0.1", vnc.port, password=vnc.password)
    reg = PluginRegistry()
    assert reg.register_engine("TestLab", lab) is not None, reg.failures
    srv = LiveServer(tmp_path_factory.mktemp("srv-vnc"), plugins=reg).start()
    yield srv
    srv.stop()


CANVAS_CENTRE = """() => {
  const c = document.querySelector('#screen canvas');
  if (!c || !c.width) return null;
  const [r, g, b] = c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data;
  return [r, g, b];
}"""


def test_novnc_page_shows_the_remote_screen_and_sends_keys(vnc_core: LiveServer, vnc: XvncServer, page: Any) -> None:
    admin = vnc_core.admin()
    admin.post("/api/server/create", {"server_name": "vnclab", "server_type": "TestLab", "server_addr": "lab://vnclab",
                                      "server_user": "root", "server_pass": PASSWORD})
    create_vm(admin, "vnclab", "screen1")
    url = admin.get("/api/client/remote/vnclab/screen1")["console_url"]
    page_url, _ws, _protocols = console_link(url, admin.base_url)
    page.goto(page_url + "#" + url.split("#", 1)[1])
    # generous: 2 shared cores load ~40 ES modules, start Chromium and Xvnc
    _until(lambda: page.text_content("#bar") == "connected",
           lambda: f"noVNC connected (bar: {page.text_content('#bar')}, errors: {page.script_errors})", timeout=60)
    assert page.evaluate("location.hash") == ""  # the ticket left the address bar
    # the canvas shows the X client's colour (not a blank or black canvas)
    colour = _until(lambda: (c := page.evaluate(CANVAS_CENTRE)) and c == list(COLOUR) and c, "the remote screen")
    assert colour == list(COLOUR)
    page.click("#screen canvas")
    page.keyboard.type("q7")
    _until(lambda: vnc.keys[-2:] == [ord("q"), ord("7")], f"keys at the X client (got {vnc.keys})")
    assert not page.script_errors, page.script_errors
    # the link was for one page: opening it again connects nothing
    page.goto("about:blank")
    page.goto(page_url + "#" + url.split("#", 1)[1])
    _until(lambda: (page.text_content("#bar") or "").startswith("closed"), "a used link refused")
    admin.close()


# ---------------------------------------------------------------------- xterm.js to Docker


@pytest.fixture(scope="module")
def oci_kit(oci_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from idcs_core.testing.kit import EngineUnderTest, Kit

    spec = oci_backend.host_spec()
    eut = EngineUnderTest(server_type="OCInterface", server_addr=spec.addr, server_user="", server_pass="",
                          image=oci_backend.image, unreachable_addr="unix:///tmp/no-such-docker.sock",
                          options=dict(spec.options), vm_spec={"cpu_num": 1, "ram_num": 64, "hdd_num": 1})
    kit = Kit(eut, Path(tmp_path_factory.mktemp("idcs-term-page")))
    try:
        kit.start()
        yield kit
    finally:
        kit.stop()


def _screen(page: Any) -> str:
    return page.inner_text(".xterm-rows").replace("\xa0", " ")


def _command(page: Any, command: str, shown: Callable[[str], bool], what: str, timeout: float = 20) -> None:
    """Type ``command`` + Enter at the shell's prompt until ``shown(screen)``. busybox's shell
    flushes keys that arrive between printing its prompt and reading the line: while the last
    line is a bare prompt (the keys were dropped), type them again."""
    deadline = time.monotonic() + timeout
    page.keyboard.type(command + "\n")
    while not shown(_screen(page)):
        assert time.monotonic() < deadline, f"{what} not within {timeout}s (screen: {_screen(page)})"
        time.sleep(0.2)
        if _screen(page).rstrip().endswith("/ #") and not shown(_screen(page)):
            time.sleep(0.3)  # still a bare prompt after a moment: the line was flushed
            if _screen(page).rstrip().endswith("/ #") and not shown(_screen(page)):
                page.keyboard.type(command + "\n")


def test_terminal_page_runs_vi_and_top_in_a_container(oci_kit: Any, oci_backend: Any, page: Any) -> None:
    vm = oci_kit.create_vm("vipage")
    url = oci_kit.api.get(oci_kit.vm_path("remote", vm))["terminal_url"]
    page_url, _ws, _protocols = console_link(url, oci_kit.api.base_url)
    page.goto(page_url + "#" + url.split("#", 1)[1])
    _until(lambda: page.text_content("#bar") == "connected",
           lambda: f"terminal connected (bar: {page.text_content('#bar')}, errors: {page.script_errors})", timeout=60)
    page.click(".xterm-screen")
    _until(lambda: _screen(page).rstrip().endswith("/ #"), lambda: f"the first prompt ({_screen(page)})")
    # vi draws its full screen: '~' on each empty line below the (new, empty) file
    _command(page, "vi /tmp/from-vi.txt", lambda screen: screen.count("\n~") >= 10, "vi's screen")
    page.keyboard.type("ihello from vi")
    _until(lambda: "I /tmp/from-vi.txt" in _screen(page), lambda: f"vi's insert mode (screen: {_screen(page)})")
    page.keyboard.press("Escape")  # vi then waits a moment for the rest of an escape sequence: wait for its mode
    _until(lambda: "I /tmp/from-vi.txt" not in _screen(page), lambda: f"vi's command mode (screen: {_screen(page)})")
    page.keyboard.type(":wq\n")
    with contextlib.closing(oci_backend.client()) as dc:
        container = dc.containers.get(vm)
        _until(lambda: container.exec_run(["cat", "/tmp/from-vi.txt"])[1].decode().strip() == "hello from vi",
               lambda: f"the file vi wrote (screen: {_screen(page)})")
    _command(page, "clear", lambda screen: screen.strip() == "/ #", "the screen cleared")
    _command(page, "top", lambda screen: "Mem:" in screen and "PID" in screen, "top's screen")
    page.keyboard.type("q")
    _until(lambda: _screen(page).rstrip().endswith("/ #"), lambda: f"the prompt after top ({_screen(page)})")
    _command(page, "echo top-done-$((6*7))", lambda screen: "top-done-42" in screen, "the shell after top")
    assert not page.script_errors, page.script_errors
