"""The web panel at ``/`` in real headless Chromium (Playwright, Debian's /usr/bin/chromium) against a
real server with the real Docker engine: what operators and customers do in the browser.

Screenshots of the main pages at desktop and phone widths go to ``test-artifacts/panel/``.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from idcs_oci.testing import DockerBackend, http_get, sh
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from idcs_core.testing.server import ADMIN_PASSWORD, ApiClient, LiveServer

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "panel"
CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 30_000
RUN = uuid.uuid4().hex[:6]  # unique names: the Docker daemon is shared by the session
expect.set_options(timeout=TIMEOUT_MS)  # a loaded CI machine: Playwright's 5 s default is too short


@pytest.fixture(scope="module")
def panel_built() -> None:
    """Build the panel (npm ci + esbuild, idempotent) so the tests drive the current sources."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / "build-panel.sh")], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"scripts/build-panel.sh failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def srv(panel_built: None, oci_backend: DockerBackend, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[LiveServer]:
    """A real server with the installed engines (OCInterface among them)."""
    server = LiveServer(tmp_path_factory.mktemp("panel-srv")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(srv: LiveServer) -> Iterator[ApiClient]:
    client = srv.admin()
    yield client
    client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Watch:
    """What a page did that it must not: CSP violations, script errors, a token in a URL."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.problems: list[str] = []

    def attach(self, page: Page) -> None:
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("console", lambda m: "Content Security Policy" in m.text and self.problems.append(m.text))

    def check(self, *secrets: str) -> None:
        assert self.problems == []
        for secret in secrets:
            leaked = [u for u in self.urls if secret in u]
            assert leaked == [], f"a session token was sent in a URL: {leaked}"


@pytest.fixture
def context(browser: Browser, srv: LiveServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=srv.url, viewport=DESKTOP, locale="en-US")
    ctx.set_default_timeout(TIMEOUT_MS)
    yield ctx
    ctx.close()


def shoot(page: Page, name: str) -> None:
    """Save the page at desktop and phone widths (test artifacts)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)  # let the layout and charts settle at the new width
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/")
    form = page.get_by_test_id("login-form")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=password]").fill(password)
    form.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("logout")).to_be_visible()


def session_token(page: Page) -> str:
    return str(page.evaluate("sessionStorage.getItem('idcs.token')"))


def make_customer(api: ApiClient, name: str) -> dict[str, Any]:
    return dict(api.post("/api/users", {"username": name, "password": f"Pw-{name}-1", "email": f"{name}@example.com"}))


def make_vm(api: ApiClient, hs: str, image: str, owner: int, name: str) -> str:
    started = api.post(f"/api/client/create/{hs}", {"vm_name": name, "os_name": image, "cpu_num": 1, "ram_num": 64,
                                                   "hdd_num": 1, "owner_id": owner})
    task = api.wait_task(started["task_id"])
    assert task["state"] == "success", task
    return str(started["vm_uuid"])


@pytest.fixture(scope="module")
def docker_host(api: ApiClient, oci_backend: DockerBackend) -> Iterator[str]:
    """A Docker host added through the API, for the tests that start after the operator's flow."""
    name = f"dk{RUN}"
    spec = oci_backend.host_spec()
    api.post("/api/server/create", {"server_name": name, "server_type": "OCInterface", "server_addr": spec.addr,
                                    "server_user": "", "server_pass": "", "options": dict(spec.options),
                                    "ports_start": 42000, "ports_close": 42999})
    yield name
    for vm in api.get(f"/api/client/detail/{name}"):
        api.call("DELETE", f"/api/client/delete/{name}/{vm['vm_uuid']}", params={"wait": 120})
    api.call("DELETE", f"/api/server/delete/{name}", params={"force": "true"})


def test_root_answers_the_panel_with_a_strict_csp(srv: LiveServer, panel_built: None) -> None:
    resp = httpx.get(f"{srv.url}/", headers={"Accept-Encoding": "gzip"})
    assert resp.status_code == 200 and "text/html" in resp.headers["content-type"]
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "<script>" not in resp.text  # no inline script: the bundle comes from /panel/
    script = re.search(r'src="(/panel/app-[^"]+\.js)"', resp.text)
    assert script, resp.text
    asset = httpx.get(f"{srv.url}{script.group(1)}", headers={"Accept-Encoding": "gzip"})
    assert asset.status_code == 200 and asset.headers["content-encoding"] == "gzip"
    assert asset.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{srv.url}/panel/..%2Fconsole.py").status_code == 404


def test_operator_adds_a_host_and_creates_a_vm_for_a_customer(
        context: BrowserContext, api: ApiClient, oci_backend: DockerBackend) -> None:
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    log_in(page, "admin", ADMIN_PASSWORD)
    expect(page.get_by_test_id("page-dashboard")).to_be_visible()

    # a host, with the engine's own options as a form
    hs = f"op{RUN}"
    spec = oci_backend.host_spec()
    page.get_by_test_id("nav-hosts").click()
    page.get_by_test_id("add-host").click()
    form = page.get_by_test_id("host-form")
    form.locator("select[name=server_type]").select_option("OCInterface")
    form.locator("input[name=server_name]").fill(hs)
    form.locator("input[name=server_addr]").fill(spec.addr)
    form.locator("input[name=ports_start]").fill("43000")
    form.locator("input[name=ports_close]").fill("43999")
    form.locator("input[name=network]").fill(str(spec.options["network"]))
    form.locator("input[name=stop_timeout]").fill("5")
    form.get_by_role("button", name="Save").click()
    row = page.get_by_test_id("hosts-table").locator("tr", has_text=hs)
    expect(row).to_contain_text("online")
    host = api.get(f"/api/server/detail/{hs}")
    assert host["status"] == "online" and host["options"]["stop_timeout"] == 5, host
    row.get_by_test_id("host-test").click()
    expect(page.locator(".notice.ok", has_text=f"{hs}: online")).to_be_visible()
    shoot(page, "hosts")

    # a customer with a quota
    customer = f"cust{RUN}"
    page.get_by_test_id("nav-users").click()
    page.get_by_test_id("add-user").click()
    form = page.get_by_test_id("user-form")
    form.locator("input[name=username]").fill(customer)
    form.locator("input[name=email]").fill(f"{customer}@example.com")
    form.locator("input[name=password]").fill("Cust-Pass-123")
    form.locator("input[name=max_vms]").fill("3")
    form.get_by_role("button", name="Save").click()
    expect(page.locator("tr", has_text=customer)).to_contain_text("0/3")
    shoot(page, "users")

    # a VM for the customer, image from the host's list; the task's progress shows until it ends
    page.get_by_test_id("nav-vms").click()
    page.get_by_role("tab", name=hs).click()
    page.get_by_test_id("create-vm").click()
    form = page.get_by_test_id("vm-form")
    form.locator("input[name=vm_name]").fill(f"web{RUN}")
    expect(form.locator("select[name=os_name]")).to_have_value(oci_backend.image)
    form.locator("input[name=ram_num]").fill("64")
    form.locator("select[name=owner_id]").select_option(label=customer)
    form.get_by_role("button", name="Create VM").click()
    progress = page.get_by_test_id("task-progress")
    expect(progress).to_be_visible()
    expect(progress).to_have_attribute("data-state", "success")
    expect(progress).to_contain_text("100%")
    row = page.get_by_test_id("vms-table").locator("tr", has_text=f"web{RUN}")
    expect(row).to_contain_text("running")
    [vm] = [v for v in api.get(f"/api/client/detail/{hs}") if v["vm_name"] == f"web{RUN}"]
    owner = next(u for u in api.get("/api/users") if u["username"] == customer)
    assert vm["owner_id"] == owner["id"] and vm["status"] == "running"
    shoot(page, "vms")

    for name in ("dashboard", "tasks", "audit", "settings"):
        page.get_by_test_id(f"nav-{name}").click()
        expect(page.get_by_test_id(f"page-{name}")).to_be_visible()
        if name == "tasks":
            expect(page.get_by_test_id("tasks-table")).to_contain_text("vm_create")
        if name == "audit":
            expect(page.get_by_test_id("audit-table")).to_contain_text("vm.create")
        if name == "dashboard":  # the host's chart, drawn from its stored status history
            chart = page.locator("figure.chart", has_text=hs)
            expect(chart.locator("canvas")).to_be_visible()
            expect(chart).not_to_contain_text("No samples yet")
            assert api.get(f"/api/server/history/{hs}")[0]["status"] == "online"
        shoot(page, name)
    watch.check(session_token(page))
    api.ok("DELETE", f"/api/client/delete/{hs}/{vm['vm_uuid']}", params={"wait": 120})
    api.ok("DELETE", f"/api/server/delete/{hs}", params={"force": "true"})


def test_customer_starts_the_vm_forwards_a_port_uses_the_terminal_and_restores_a_backup(
        context: BrowserContext, api: ApiClient, docker_host: str, oci_backend: DockerBackend) -> None:
    name = f"c2{RUN}"
    user = make_customer(api, name)
    vm = make_vm(api, docker_host, oci_backend.image, user["id"], f"site{RUN}")
    api.post(f"/api/client/powers/{docker_host}/{vm}", {"action": "H_CLOSE"})

    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    log_in(page, name, f"Pw-{name}-1")
    card = page.get_by_test_id("vm-card")
    expect(card).to_have_count(1)
    expect(card).to_contain_text("stopped")
    card.click()
    expect(page.get_by_test_id("vm-title")).to_have_text(f"site{RUN}")
    shoot(page, "vm-overview")

    # start it
    page.get_by_test_id("power-S_START").click()
    expect(page.get_by_test_id("power-H_CLOSE")).to_be_visible()
    assert api.get(f"/api/client/detail/{docker_host}/{vm}")["status"] == "running"

    # a NAT rule with a port picked by the server, then the VM's web server through it
    page.get_by_test_id("tab-network").click()
    page.get_by_test_id("nat-form").locator("input[name=vm_port]").fill("80")
    page.get_by_test_id("nat-form").get_by_role("button", name="Add rule").click()
    port_cell = page.get_by_test_id("nat-host-port")
    expect(port_cell).to_have_count(1)
    port = int(port_cell.inner_text())
    assert 42000 <= port <= 42999
    assert "hello from idcs-test" in http_get(port)
    shoot(page, "vm-network")

    # the web terminal in the page runs a command in the container
    page.get_by_test_id("tab-console").click()
    page.get_by_test_id("open-terminal").click()
    frame = page.frame_locator("[data-testid=terminal-frame]")
    expect(frame.locator("body")).to_contain_text("#")  # the shell's prompt
    frame.locator("body").click()
    page.keyboard.type("echo panel-$((6*7)) > /www/term.txt; cat /www/term.txt")
    page.keyboard.press("Enter")
    expect(frame.locator("body")).to_contain_text("panel-42")
    assert http_get(port, "/term.txt").strip() == "panel-42"
    shoot(page, "vm-terminal")

    # a backup, a change, a restore: the file is as it was at the backup
    dc = oci_backend.client()
    try:
        sh(dc, vm, "echo before > /www/f.txt")
        page.get_by_test_id("tab-backups").click()
        page.get_by_test_id("backup-form").get_by_role("button", name="Create backup").click()
        progress = page.get_by_test_id("task-progress")
        expect(progress).to_have_attribute("data-state", "success", timeout=120_000)
        expect(page.get_by_test_id("backup-name")).to_have_count(1)
        sh(dc, vm, "echo after > /www/f.txt")
        assert http_get(port, "/f.txt").strip() == "after"
        backup_task = progress.get_attribute("data-task")
        page.get_by_test_id("restore-backup").click()
        page.get_by_test_id("confirm").click()
        expect(progress).not_to_have_attribute("data-task", str(backup_task))
        expect(progress).to_have_attribute("data-state", "success", timeout=120_000)
        assert http_get(port, "/f.txt", timeout=30).strip() == "before"
    finally:
        dc.close()
    shoot(page, "vm-backups")
    watch.check(session_token(page))


def test_a_customer_forged_request_for_another_customers_vm_is_refused(
        context: BrowserContext, api: ApiClient, docker_host: str, oci_backend: DockerBackend) -> None:
    alice, bob = make_customer(api, f"al{RUN}"), make_customer(api, f"bo{RUN}")
    bobs_vm = make_vm(api, docker_host, oci_backend.image, bob["id"], f"bob{RUN}")
    page = context.new_page()
    log_in(page, alice["username"], f"Pw-{alice['username']}-1")
    expect(page.get_by_test_id("page-my-vms")).to_contain_text("Nothing here yet")
    # the page's own token, sent by hand to another customer's VM: the API refuses, nothing changes
    forged = page.evaluate("""async ([hs, vm]) => {
        const headers = {Authorization: 'Bearer ' + sessionStorage.getItem('idcs.token'),
                         'Content-Type': 'application/json'};
        const detail = await fetch(`/api/client/detail/${hs}/${vm}`, {headers});
        const power = await fetch(`/api/client/powers/${hs}/${vm}`,
                                  {method: 'POST', headers, body: JSON.stringify({action: 'H_CLOSE'})});
        return [detail.status, (await detail.json()).code, power.status, (await power.json()).code];
    }""", [docker_host, bobs_vm])
    assert forged == [403, 403, 403, 403], forged
    assert api.get(f"/api/client/detail/{docker_host}/{bobs_vm}")["status"] == "running"
    # and the panel's own VM page for it shows the server's refusal
    page.goto(f"/#/vm/{quote(docker_host)}/{quote(bobs_vm)}")
    expect(page.get_by_role("alert")).to_contain_text("another user")


def test_a_temp_login_link_opens_that_one_vm_and_nothing_else(
        context: BrowserContext, srv: LiveServer, api: ApiClient, docker_host: str, oci_backend: DockerBackend) -> None:
    owner = make_customer(api, f"tl{RUN}")
    vm = make_vm(api, docker_host, oci_backend.image, owner["id"], f"tmp{RUN}")
    other = make_vm(api, docker_host, oci_backend.image, owner["id"], f"oth{RUN}")
    temp = api.get(f"/api/client/temptoken/{docker_host}/{vm}")["temp_token"]

    # the billing module's real link, opened in the browser: the server's 303 lands on the panel
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    landed = page.goto(f"/api/client/templogin?token={quote(temp)}")
    assert landed is not None and landed.request.redirected_from is not None
    link = landed.request.redirected_from
    assert "/api/client/templogin?" in link.url and temp in link.url
    first = link.response()
    assert first is not None and first.status == 303 and first.headers["location"].startswith("/#temp="), first
    expect(page.get_by_test_id("vm-title")).to_have_text(f"tmp{RUN}")
    assert "temp=" not in page.url and temp not in page.url, page.url  # the token left the address at once
    token = session_token(page)
    assert token and token != temp and token not in page.url
    assert page.locator("nav a").count() == 0  # no menu: nothing else to open
    shoot(page, "temp-login")
    # another route still shows only this VM; the token reaches nothing else
    page.goto(f"{srv.url}/#/vm/{quote(docker_host)}/{quote(other)}")
    page.reload()
    expect(page.get_by_test_id("vm-title")).to_have_text(f"tmp{RUN}")
    status, body = ApiClient(srv.url, token).call("GET", f"/api/client/detail/{docker_host}/{other}")
    assert status == 403, body
    # the one-time token was in the link's request only, the session token in no request's URL
    assert watch.urls[0] == link.url
    later = watch.urls[1:]
    assert len(later) > 3 and [u for u in later if temp in u] == [], later
    watch.check(token)
    # the link is used up: opening it again logs nobody in
    again = httpx.get(link.url, follow_redirects=False)
    assert again.status_code == 401 and again.json()["code"] != 200, again.text


def test_switching_to_chinese_changes_the_texts_and_is_remembered(
        browser: Browser, srv: LiveServer, context: BrowserContext) -> None:
    page = context.new_page()
    log_in(page, "admin", ADMIN_PASSWORD)
    expect(page.get_by_test_id("nav-hosts")).to_have_text("Hosts")
    page.get_by_test_id("lang-switch").click()
    expect(page.get_by_test_id("nav-hosts")).to_have_text("主机")
    expect(page.get_by_test_id("logout")).to_have_text("退出登录")
    page.get_by_test_id("nav-tokens").click()
    expect(page.get_by_test_id("page-tokens").get_by_role("heading")).to_have_text("API 令牌")
    expect(page.get_by_test_id("add-token")).to_have_text("创建令牌")
    page.reload()
    expect(page.get_by_test_id("nav-vms")).to_have_text("虚拟机")
    page.get_by_test_id("theme-switch").click()
    assert page.evaluate("document.documentElement.dataset.theme") in ("dark", "light")
    shoot(page, "dashboard-zh")
    # a new browser whose language is Chinese starts in Chinese
    zh = browser.new_context(base_url=srv.url, locale="zh-CN")
    zh.set_default_timeout(TIMEOUT_MS)
    try:
        p2 = zh.new_page()
        p2.goto("/")
        expect(p2.get_by_test_id("login-form").get_by_role("button", name="登录")).to_be_visible()
    finally:
        zh.close()


def test_operator_resizes_reinstalls_and_deletes_a_vm_with_confirmation(
        context: BrowserContext, api: ApiClient, docker_host: str, oci_backend: DockerBackend) -> None:
    owner = make_customer(api, f"rz{RUN}")
    vm = make_vm(api, docker_host, oci_backend.image, owner["id"], f"rs{RUN}")
    page = context.new_page()
    log_in(page, "admin", ADMIN_PASSWORD)
    page.goto(f"/#/vm/{quote(docker_host)}/{quote(vm)}")
    expect(page.get_by_test_id("vm-title")).to_have_text(f"rs{RUN}")

    def finished(previous: str | None = None) -> str:
        progress = page.get_by_test_id("task-progress")
        if previous:
            expect(progress).not_to_have_attribute("data-task", previous)
        expect(progress).to_have_attribute("data-state", "success", timeout=120_000)
        return str(progress.get_attribute("data-task"))

    page.locator("form", has=page.get_by_role("button", name="Resize")).locator("input[name=ram_num]").fill("96")
    page.get_by_role("button", name="Resize").click()
    task = finished()
    assert api.get(f"/api/client/detail/{docker_host}/{vm}")["ram_num"] == 96

    dc = oci_backend.client()
    try:
        sh(dc, vm, "echo mine > /root-file.txt")
        page.get_by_test_id("reinstall").click()
        page.get_by_test_id("confirm").click()
        finished(task)
        out = dc.containers.get(vm).exec_run(["cat", "/root-file.txt"]).output.decode()
        assert "No such file" in out, out  # a fresh system
    finally:
        dc.close()

    # the free-port check of a NAT rule's host port
    api.post(f"/api/client/natadd/{docker_host}/{vm}", {"host_port": 42500, "vm_port": 80, "protocol": "tcp"})
    page.get_by_test_id("tab-network").click()
    nat_form = page.get_by_test_id("nat-form")
    expect(nat_form).to_contain_text("42000\u201342999")  # the host's NAT port range
    nat_form.locator("input[name=host_port]").fill("42500")
    nat_form.get_by_test_id("nat-check").click()
    expect(page.locator(".notice.error", has_text="Port 42500 is taken")).to_be_visible()
    nat_form.locator("input[name=host_port]").fill("42501")
    nat_form.get_by_test_id("nat-check").click()
    expect(page.locator(".notice.ok", has_text="Port 42501 is free")).to_be_visible()
    page.get_by_test_id("tab-overview").click()

    # delete: cancelling keeps the VM, confirming removes it
    page.get_by_test_id("delete-vm").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    assert api.get(f"/api/client/detail/{docker_host}/{vm}")["vm_uuid"] == vm
    page.get_by_test_id("delete-vm").click()
    page.get_by_test_id("confirm").click()
    expect(page.get_by_test_id("page-vms")).to_be_visible()
    [deleting] = [tk for tk in api.get("/api/tasks", params={"limit": 20})
                  if tk["kind"] == "vm_delete" and tk["vm_uuid"] == vm]
    assert api.wait_task(deleting["id"])["state"] == "success"
    status, body = api.call("GET", f"/api/client/detail/{docker_host}/{vm}")
    assert status == 404 and body["code"] == 1002, body


def test_customer_sets_the_root_password_and_attaches_and_detaches_a_disk(
        context: BrowserContext, api: ApiClient, docker_host: str, oci_backend: DockerBackend) -> None:
    name = f"dk{RUN}x"
    user = make_customer(api, name)
    vm = make_vm(api, docker_host, oci_backend.image, user["id"], f"disk{RUN}")
    page = context.new_page()
    log_in(page, name, f"Pw-{name}-1")
    page.get_by_test_id("vm-card").click()

    dc = oci_backend.client()
    before = sh(dc, vm, "grep '^root:' /etc/shadow")
    password_form = page.locator("form", has=page.get_by_role("button", name="Set password"))
    password_form.locator("input[name=password]").fill("N3w-Root-pass")
    password_form.get_by_role("button", name="Set password").click()
    expect(page.locator(".notice.ok", has_text="Password set")).to_be_visible()
    after = sh(dc, vm, "grep '^root:' /etc/shadow")
    assert after != before and after.startswith("root:$6$"), after
    dc.close()

    page.get_by_test_id("tab-storage").click()
    form = page.get_by_test_id("disk-form")
    form.locator("input[name=hdd_name]").fill("data")
    form.locator("input[name=hdd_size]").fill("1")
    form.get_by_role("button", name="Attach").click()
    row = page.get_by_test_id("disks-table").locator("tr", has_text="data")
    expect(row).to_contain_text("attached")
    dc = oci_backend.client()
    try:
        sh(dc, vm, "echo kept > /mnt/data/f")  # the disk is really there, writable
        shoot(page, "vm-storage")
        row.get_by_role("button", name="Detach").click()
        expect(row).to_contain_text("detached")
        code, _ = dc.containers.get(vm).exec_run(["test", "-e", "/mnt/data/f"])
        assert code != 0, "the disk is still mounted in the container"
        row.get_by_role("button", name="Attach").click()
        expect(row).to_contain_text("attached")
        assert sh(dc, vm, "cat /mnt/data/f").strip() == "kept"
    finally:
        dc.close()
    assert api.get(f"/api/client/hdd/detail/{docker_host}/{vm}") == [{"hdd_name": "data", "hdd_size": 1,
                                                                        "mounted": True}]


def test_operator_creates_uses_and_revokes_a_named_api_token(
        context: BrowserContext, srv: LiveServer, api: ApiClient) -> None:
    page = context.new_page()
    watch = Watch()
    watch.attach(page)
    log_in(page, "admin", ADMIN_PASSWORD)
    page.get_by_test_id("nav-tokens").click()
    expect(page.get_by_test_id("page-tokens")).to_be_visible()
    page.get_by_test_id("add-token").click()
    form = page.get_by_test_id("token-form")
    name = f"whmcs{RUN}"
    form.locator("input[name=name]").fill(name)
    form.locator("select[name=profile]").select_option("idcsmart")
    form.locator("input[name=expires_in_days]").fill("30")
    form.locator("input[name=scope-read-only]").check()
    form.get_by_role("button", name="Create token").click()

    # the secret, shown once
    secret_cell = page.get_by_test_id("token-secret")
    expect(secret_cell).to_have_text(re.compile(r"^idcst_\S{16,}$"))
    secret = secret_cell.inner_text()
    shoot(page, "token-created")
    module = ApiClient(srv.url, secret)
    try:
        assert module.get("/api/users/current")["is_admin"] is True  # the secret works
        status, body = module.call("POST", "/api/system/recalculate-quotas", {})  # read-only: GET only
        assert status == 403, body
        [listed] = [k for k in api.get("/api/tokens") if k["name"] == name]
        assert listed["profile"] == "idcsmart" and listed["scopes"] == ["read-only"] and listed["expires_at"]
        assert listed["last_used_at"] and not listed["revoked"] and secret.startswith(listed["prefix"])
        assert secret not in str(api.call("GET", "/api/tokens"))

        # closing the dialog forgets it: neither the page nor a reload shows it again
        page.get_by_test_id("token-done").click()
        expect(page.get_by_test_id("token-secret")).to_have_count(0)
        row = page.get_by_test_id("tokens-table").locator("tr", has_text=name)
        expect(row).to_contain_text("idcsmart")
        expect(row).to_contain_text("read only")
        expect(row).to_contain_text("active")
        assert secret not in page.content()
        page.reload()
        expect(row).to_contain_text("active")
        assert "—" not in row.locator("td").nth(4).inner_text()  # the expiry shows
        assert "—" not in row.locator("td").nth(5).inner_text()  # so does the last use
        assert secret not in page.content()
        shoot(page, "tokens")

        # revoke: cancelling keeps it, confirming ends it at once
        row.get_by_test_id("revoke-token").click()
        page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
        assert module.call("GET", "/api/users/current")[0] == 200
        row.get_by_test_id("revoke-token").click()
        page.get_by_test_id("confirm").click()
        expect(row).to_contain_text("revoked")
        status, body = module.call("GET", "/api/users/current")
        assert status == 401 and body["code"] != 200, body
    finally:
        module.close()
    watch.check(session_token(page), secret)


def test_a_customer_creates_on_a_host_only_after_the_operator_grants_it_in_the_page(
        browser: Browser, context: BrowserContext, srv: LiveServer, api: ApiClient, docker_host: str,
        oci_backend: DockerBackend) -> None:
    name = f"gr{RUN}"
    user = make_customer(api, name)
    password = f"Pw-{name}-1"
    assert api.get(f"/api/users/{user['id']}/hosts") == []
    # the API refuses a customer's create on a host not granted to them
    customer_api = ApiClient(srv.url, ApiClient(srv.url).login(name, password))
    body = {"vm_name": f"g0{RUN}", "os_name": oci_backend.image, "cpu_num": 1, "ram_num": 64, "hdd_num": 1}
    status, refused = customer_api.call("POST", f"/api/client/create/{docker_host}", body)
    assert status == 403 and refused["msg"], refused
    customer_api.close()

    page = context.new_page()
    log_in(page, name, password)
    page.get_by_test_id("create-vm").click()
    page.get_by_test_id("host-choice").locator("input[name=hs_name]").fill(docker_host)
    page.get_by_test_id("host-choice").get_by_role("button", name="Choose a host").click()
    form = page.get_by_test_id("vm-form")
    form.locator("input[name=vm_name]").fill(f"g1{RUN}")
    expect(form.locator("select[name=os_name]")).to_have_value(oci_backend.image)
    form.locator("input[name=ram_num]").fill("64")
    form.get_by_role("button", name="Create VM").click()
    expect(page.locator(".notice.error", has_text=refused["msg"])).to_be_visible()  # the server's own message
    assert [v for v in api.get(f"/api/client/detail/{docker_host}") if v["owner_id"] == user["id"]] == []

    # the operator grants the host on the users page (another tab: its own session)
    admin = context.new_page()
    log_in(admin, "admin", ADMIN_PASSWORD)
    admin.get_by_test_id("nav-users").click()
    admin.get_by_test_id("page-users").locator("tr", has_text=name).get_by_test_id("user-hosts").click()
    grant_row = admin.get_by_test_id("grants-table").locator("tr", has_text=docker_host)
    expect(grant_row).to_contain_text("not granted")
    grant_row.get_by_test_id("grant-host").click()
    expect(grant_row.get_by_test_id("revoke-host")).to_be_visible()
    expect(grant_row).not_to_contain_text("not granted")
    assert api.get(f"/api/users/{user['id']}/hosts") == [docker_host]
    shoot(admin, "user-hosts")

    # the same form, sent again, now creates the VM
    form.get_by_role("button", name="Create VM").click()
    progress = page.get_by_test_id("task-progress")
    expect(progress).to_have_attribute("data-state", "success", timeout=120_000)
    expect(page.get_by_test_id("vm-card")).to_have_count(1)
    expect(page.get_by_test_id("vm-card")).to_contain_text(f"g1{RUN}")
    [mine] = [v for v in api.get(f"/api/client/detail/{docker_host}") if v["owner_id"] == user["id"]]
    assert mine["vm_name"] == f"g1{RUN}" and mine["status"] == "running", mine

    # taking the host back in the page: the VM stays, the next create is refused
    grant_row.get_by_test_id("revoke-host").click()
    expect(grant_row.get_by_test_id("grant-host")).to_be_visible()
    assert api.get(f"/api/users/{user['id']}/hosts") == []
    customer_api = ApiClient(srv.url, session_token(page))
    try:
        status, again = customer_api.call("POST", f"/api/client/create/{docker_host}", body | {"vm_name": f"g2{RUN}"})
        assert status == 403, again
    finally:
        customer_api.close()
    assert api.get(f"/api/client/detail/{docker_host}/{mine['vm_uuid']}")["vm_uuid"] == mine["vm_uuid"]
