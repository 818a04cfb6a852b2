"""What a hostile page gets from our browsers: the storage restore reaches only the frames it
is for (a cross-site iframe, another site's renderer process, never runs the restore script,
so no storage value of the session is handed to that process), and no downloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Route

from workers.browser.restore import install_restore_script, plan_restore
from workers.jobs.browse import BROWSE_CONTEXT_OPTIONS
from workers.jobs.capture import CAPTURE_CONTEXT_OPTIONS

pytestmark = pytest.mark.integration

SITE = "http://site.test"
WIDGET = "http://widget.example"
# Records, in each frame, every touch of its storage and every storage write, before any
# other script of that frame runs.
RECORDER = """(() => {
  const writes = window.__writes = [];
  const set = Storage.prototype.setItem;
  Storage.prototype.setItem = function (k, v) { writes.push(k); return set.call(this, k, v); };
  for (const name of ["localStorage", "sessionStorage"]) {
    const get = Object.getOwnPropertyDescriptor(window, name).get;
    Object.defineProperty(window, name, {
      configurable: true,
      get() { writes.push(name); return get.call(window); },
    });
  }
})();"""
STATE = {
    "cookies": [],
    "origins": [
        {"origin": SITE, "localStorage": [{"name": "site-token", "value": "site-secret"}]},
        {"origin": WIDGET, "localStorage": [{"name": "widget-token", "value": "widget-secret"}]},
    ],
}
PAGES = {
    f"{SITE}/": f'<h1>site</h1><iframe src="{WIDGET}/frame"></iframe>'
    f'<iframe src="{SITE}/same"></iframe>',
    f"{SITE}/same": "<p>same origin frame</p>",
    f"{WIDGET}/frame": "<p>cross-site widget</p>",
    f"{SITE}/download": '<a id="get" href="/payload.bin" download>get</a>',
    f"{SITE}/payload.bin": "MZ not really an executable",
}


async def _serve(route: Route) -> None:
    body = PAGES.get(route.request.url)
    await route.fulfill(status=200 if body else 404, content_type="text/html", body=body or "")


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    plan = plan_restore(STATE)
    ctx = await browser.new_context(**plan.context_options)

    await ctx.route("**/*", _serve)
    await ctx.add_init_script(RECORDER)
    yield ctx
    await ctx.close()


async def test_cross_site_frames_never_run_the_restore(context: BrowserContext) -> None:
    plan = plan_restore(STATE)
    assert plan.init_script is not None
    page = await context.new_page()
    await install_restore_script(page, plan.init_script)
    await page.goto(f"{SITE}/", wait_until="load")
    frames = {frame.url: frame for frame in page.frames}
    assert set(frames) == {f"{SITE}/", f"{SITE}/same", f"{WIDGET}/frame"}

    assert await page.evaluate("window.__writes") == [
        "localStorage",
        "site-token",
        "sessionStorage",
    ]
    assert await page.evaluate("localStorage.getItem('site-token')") == "site-secret"
    same = frames[f"{SITE}/same"]
    assert await same.evaluate("localStorage.getItem('site-token')") == "site-secret"
    widget = frames[f"{WIDGET}/frame"]
    assert await widget.evaluate("window.__writes") == []  # the restore never ran there


@pytest.mark.parametrize(
    "options", [BROWSE_CONTEXT_OPTIONS, CAPTURE_CONTEXT_OPTIONS], ids=["browse", "capture"]
)
async def test_downloads_are_refused(browser: Browser, options: dict[str, Any]) -> None:
    context = await browser.new_context(**options)
    try:
        await context.route("**/*", _serve)
        page = await context.new_page()
        await page.goto(f"{SITE}/download")
        async with page.expect_download() as started:
            await page.click("#get")
        download = await started.value
        failure = await download.failure()  # Chromium refused it: nothing was written
        assert failure is not None and "accept_downloads" in failure
    finally:
        await context.close()
