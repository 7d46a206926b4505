"""The web panel's first load in headless Chromium: bytes transferred (compressed) and time to interactive.

Goal: the first load transfers at most 500 KB compressed. Each run uses a fresh browser
context (empty cache) against our server on 127.0.0.1 (SQLite, no host):

- first load: from navigation start to the log-in form accepting input; bytes are the sum of
  ``transferSize`` of the page and every resource it fetched (what went over the wire,
  gzip included);
- log-in to dashboard: from the click on "Log in" to the dashboard's counters shown.

    .venv/bin/python bench/panel_load.py --runs 5

Needs the panel built (``bash scripts/build-panel.sh``) and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from idcs_core.testing.server import ADMIN_PASSWORD, LiveServer

REPO = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 500 * 1024

TRANSFERRED = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  return {bytes: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
          decoded: nav.decodedBodySize + res.reduce((n, r) => n + r.decodedBodySize, 0),
          requests: 1 + res.length};
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not (REPO / "idcs_core" / "static" / "panel" / "index.html").is_file():
        print("the panel is not built: bash scripts/build-panel.sh", file=sys.stderr)
        return 1
    first_ms: list[float] = []
    login_ms: list[float] = []
    sizes: list[dict[str, int]] = []
    with tempfile.TemporaryDirectory(prefix="idcs-bench-panel-") as tmp:
        srv = LiveServer(Path(tmp)).start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
                try:
                    for _ in range(args.runs + 1):  # the first run warms the server up and is not counted
                        ctx = browser.new_context(base_url=srv.url, locale="en-US")
                        page = ctx.new_page()
                        page.goto("/")
                        page.locator("[data-testid=login-form] input[name=username]").wait_for(state="visible")
                        tti = float(page.evaluate("performance.now()"))
                        size = page.evaluate(TRANSFERRED)
                        page.fill("input[name=username]", "admin")
                        page.fill("input[name=password]", ADMIN_PASSWORD)
                        start = float(page.evaluate("performance.now()"))
                        page.click("button[type=submit]")
                        page.locator("[data-testid=vms-count]").wait_for(state="visible")
                        login = float(page.evaluate("performance.now()")) - start
                        ctx.close()
                        first_ms.append(tti)
                        login_ms.append(login)
                        sizes.append(size)
                finally:
                    browser.close()
        finally:
            srv.stop()
    first_ms, login_ms, sizes = first_ms[1:], login_ms[1:], sizes[1:]
    size = sizes[-1]
    print(f"first load: {size['bytes'] / 1024:.1f} KB transferred ({size['decoded'] / 1024:.1f} KB decoded) "
          f"in {size['requests']} requests; limit {LIMIT_BYTES // 1024} KB: "
          f"{'met' if size['bytes'] <= LIMIT_BYTES else 'NOT met'}")
    print(f"time to interactive (log-in form), median of {len(first_ms)}: {statistics.median(first_ms):.0f} ms "
          f"(min {min(first_ms):.0f}, max {max(first_ms):.0f})")
    print(f"log-in to dashboard, median of {len(login_ms)}: {statistics.median(login_ms):.0f} ms "
          f"(min {min(login_ms):.0f}, max {max(login_ms):.0f})")
    return 0 if size["bytes"] <= LIMIT_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
