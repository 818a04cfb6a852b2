"""A scripted user of the live view, for the demo, tests and the benchmark.

It drives the live-view page the way a person does: it waits for frames, clicks on the
picture of the remote browser and types on the keyboard. To know *where* a remote element
is, it measures the same page in its own browser at the remote viewport size, as a person
would simply see it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from playwright.async_api import Browser, Frame, Page

from workers.dev import totp


@dataclass(frozen=True)
class FrameInfo:
    frames: int
    width: int
    height: int


class LiveViewUser:
    """``user = LiveViewUser(viewer=page, browser=browser); await user.open(url)``, or, for a
    live view shown in an iframe of ``viewer`` (the settings page's login dialog),
    ``LiveViewUser(viewer=page, browser=browser, frame=iframe); await user.attach()``."""

    def __init__(
        self,
        *,
        viewer: Page,
        browser: Browser,
        timeout_s: float = 20.0,
        frame: Frame | None = None,
    ) -> None:
        self.viewer = viewer
        self._doc = frame or viewer.main_frame
        self._browser = browser
        self._timeout_ms = timeout_s * 1000

    async def open(self, url: str) -> FrameInfo:
        await self.viewer.goto(url)
        return await self.attach()

    async def attach(self) -> FrameInfo:
        """Wait until the live view shows the remote page."""
        await self._doc.wait_for_function(
            "() => window.liveview && window.liveview.frames > 0", timeout=self._timeout_ms
        )
        return await self.frame_info()

    async def frame_info(self) -> FrameInfo:
        info = await self._doc.evaluate(
            "() => ({f: window.liveview.frames, w: window.liveview.lastFrame.w,"
            " h: window.liveview.lastFrame.h})"
        )
        return FrameInfo(frames=int(info["f"]), width=int(info["w"]), height=int(info["h"]))

    async def state(self) -> str | None:
        status = await self._doc.evaluate("() => window.liveview.status")
        return None if not status else str(status.get("state"))

    async def remote_url(self) -> str | None:
        status = await self._doc.evaluate("() => window.liveview.status")
        return None if not status else status.get("url")

    async def locate(self, url: str, selector: str) -> tuple[float, float]:
        """Where ``selector`` sits on ``url`` at the remote viewport size (CSS px)."""
        info = await self.frame_info()
        context = await self._browser.new_context(
            viewport={"width": info.width, "height": info.height}
        )
        try:
            page = await context.new_page()
            await page.goto(url)
            box = await page.locator(selector).bounding_box(timeout=self._timeout_ms)
            if box is None:
                raise LookupError(f"{selector} is not visible on {url}")
            return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        finally:
            await context.close()

    async def click_remote(self, x: float, y: float) -> None:
        """Click the picture of the remote page at remote CSS coordinates (x, y)."""
        info = await self.frame_info()
        rect = await self._doc.evaluate(
            "() => { const r = window.liveview.canvas.getBoundingClientRect();"
            " return {left: r.left, top: r.top, width: r.width, height: r.height}; }"
        )
        left, top = await self._frame_offset()
        sx, sy = rect["width"] / info.width, rect["height"] / info.height
        await self.viewer.mouse.click(left + rect["left"] + x * sx, top + rect["top"] + y * sy)

    async def _frame_offset(self) -> tuple[float, float]:
        """Where the live view's document starts on the viewer page (0, 0 unless framed)."""
        if self._doc is self.viewer.main_frame:
            return 0.0, 0.0
        box = await (await self._doc.frame_element()).bounding_box()
        if box is None:
            raise LookupError("the live view's iframe is not visible")
        return box["x"], box["y"]

    async def type(self, text: str) -> None:
        await self.viewer.keyboard.type(text, delay=15)

    async def press(self, key: str, *, settle: bool = False) -> None:
        """Press a key; with ``settle``, wait until the page it changed has settled."""
        before = (await self.frame_info()).frames
        await self.viewer.keyboard.press(key)
        if settle:
            await self.wait_for_settled_frames(since=before)

    async def wait_for_remote_url(self, fragment: str, *, timeout_s: float | None = None) -> None:
        """Wait until the remote page's URL (shown in the live view) contains ``fragment``."""
        wait = self._timeout_ms / 1000 if timeout_s is None else timeout_s
        deadline = asyncio.get_running_loop().time() + wait
        while fragment not in (await self.remote_url() or ""):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"the remote page never reached a URL with {fragment!r} "
                    f"(it shows {await self.remote_url()!r})"
                )
            await asyncio.sleep(0.1)

    async def wait_for_settled_frames(self, *, since: int, settle_s: float = 1.0) -> None:
        """Wait for a frame after number ``since`` (the page changed), then let it settle.

        A blinking caret keeps frames coming, so "no frames for a while" never happens.
        """
        deadline = asyncio.get_running_loop().time() + self._timeout_ms / 1000
        while (await self.frame_info()).frames <= since:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the remote page did not change")
            await asyncio.sleep(0.05)
        await asyncio.sleep(settle_s)

    async def wait_for_state(self, state: str) -> None:
        deadline = asyncio.get_running_loop().time() + self._timeout_ms / 1000
        while await self.state() != state:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the capture never reached {state!r}")
            await asyncio.sleep(0.1)

    async def log_in_with_two_steps(
        self, login_page: str, username: str, password: str, totp_secret: str
    ) -> None:
        """Log in on the fixture site's two-step login through the live view: click the user
        field of ``login_page``, type the name, Tab, the password, Enter; then the one-time
        code of ``totp_secret`` (computed when the code page shows), Enter; wait for ``/app``."""
        await log_in_to_fixture_site(
            self, login_page, username, password, lambda: totp.totp(totp_secret)
        )


async def log_in_to_fixture_site(
    user: LiveViewUser,
    login_url: str,
    name: str,
    password: str,
    totp_code: Callable[[], str] | None = None,
    *,
    code_attempts: int = 3,
) -> None:
    """Log in on the fixture site's login page (``login_url``) shown in the live view: click
    the user name field, type, Tab, the password, Enter, and a fresh 2FA code when asked.

    On a loaded machine the two-step page can appear after the code was typed; the code
    field has focus once it is there, so the code is typed again until the app shows."""
    await user.wait_for_remote_url("/login")
    x, y = await user.locate(login_url, "#username")
    await user.click_remote(x, y)
    await user.type(name)
    await user.press("Tab")
    await user.type(password)
    if totp_code is None:
        await user.press("Enter")
        await user.wait_for_remote_url("/app")
        return
    await user.press("Enter", settle=True)  # the two-step page loads; its code field has focus
    for attempt in range(1, code_attempts + 1):
        await user.type(totp_code())
        await user.press("Enter")
        try:
            await user.wait_for_remote_url("/app", timeout_s=10)
            return
        except TimeoutError:
            if attempt == code_attempts:
                raise
