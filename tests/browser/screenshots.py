"""`make screenshots`: a PNG of every dashboard page, and of every customer page (the portal and the hosted
policy), at desktop width, under the folder given (var/screenshots/).

Starts what the browser tests start (the embedded broker and PostgreSQL unless KAFKA_BOOTSTRAP_SERVERS /
DATABASE_URL are set, then the services as processes) and walks the same tour in Debian's Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, DESKTOP
from tests.browser.customer_tour import walk_customer_pages
from tests.browser.stack import running_stack
from tests.browser.tour import walk_every_page
from tests.support.infrastructure import kafka_broker, postgres_server


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "var/screenshots")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="refundflow-screens-") as work:
        workdir = Path(work)
        (workdir / "pg").mkdir()
        (workdir / "kafka").mkdir()
        with (
            postgres_server(workdir / "pg") as postgres_url,
            kafka_broker(workdir / "kafka") as kafka,
            running_stack(workdir, postgres_url, kafka) as stack,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="UTC").new_page()

            def shoot(name: str, current: Page) -> None:
                path = target / f"{name}.png"
                current.screenshot(path=str(path), full_page=True)
                print(f"wrote {path}", flush=True)

            walk_every_page(stack, page, browser, shoot)
            customer = browser.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="UTC").new_page()
            walk_customer_pages(stack, customer, browser, shoot)
            browser.close()


if __name__ == "__main__":
    main()
