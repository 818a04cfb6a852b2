"""A scripted person on the settings page (``/ui/``), for the demo and the browser tests.

Everything goes by role and accessible name, with the labels of the page's own dictionary,
the way a person (or a screen reader) finds things; the login happens inside the dialog's
live view through :class:`LiveViewUser`.
"""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.async_api import Browser, Locator, Page, expect

from producers.http.i18n import labels
from workers.dev.liveview_user import LiveViewUser


class SettingsPageUser:
    """``user = SettingsPageUser(page=page, browser=browser); await user.open(link)``"""

    def __init__(
        self,
        *,
        page: Page,
        browser: Browser,
        lang: str = "en",
        timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self.page = page
        self.words = labels(lang)
        self._browser = browser
        self._timeout_ms = timeout.total_seconds() * 1000

    async def open(self, link: str) -> None:
        await self.page.goto(link)
        await expect(self.page.get_by_role("heading", name=self.words["title"])).to_be_visible(
            timeout=self._timeout_ms
        )

    def button(self, key: str, scope: Locator | Page | None = None) -> Locator:
        return (scope or self.page).get_by_role("button", name=self.words[key])

    def row(self, label: str) -> Locator:
        header = self.page.get_by_role("rowheader", name=label, exact=True)
        return self.page.get_by_role("row").filter(has=header)

    def login_dialog(self) -> Locator:
        title = max(self.words["login_dialog_title"].split("{label}"), key=len).strip()
        return self.page.get_by_role("dialog", name=re.compile(re.escape(title)))

    async def wait_for_status(self, label: str, status_key: str) -> None:
        """Wait until the list shows ``label`` with this status badge (the page refreshes)."""
        await expect(self.row(label).get_by_text(self.words[status_key], exact=True)).to_be_visible(
            timeout=self._timeout_ms
        )

    async def fill_form(
        self, *, label: str, start_url: str, selector: str = "", pattern: str = ""
    ) -> Locator:
        await self.button("add_site_session").click()
        dialog = self.page.get_by_role("dialog", name=self.words["add_site_session"])
        await dialog.get_by_label(self.words["label"], exact=True).fill(label)
        await dialog.get_by_label(self.words["start_url"], exact=True).fill(start_url)
        await dialog.get_by_label(self.words["logged_in_selector"], exact=True).fill(selector)
        await dialog.get_by_label(self.words["login_url_pattern"], exact=True).fill(pattern)
        return dialog

    async def add_session(
        self, *, label: str, start_url: str, selector: str = "", pattern: str = ""
    ) -> None:
        """Add site session → fill the form → Open login window; the login dialog opens."""
        dialog = await self.fill_form(
            label=label, start_url=start_url, selector=selector, pattern=pattern
        )
        await self.button("open_login_window", dialog).click()
        await expect(self.login_dialog()).to_be_visible(timeout=self._timeout_ms)

    async def relogin(self, label: str) -> None:
        await self.button("relogin", self.row(label)).click()
        await expect(self.login_dialog()).to_be_visible(timeout=self._timeout_ms)

    async def live_view(self) -> LiveViewUser:
        """The live view inside the login dialog, once it shows the remote browser."""
        frame_element = self.login_dialog().get_by_title(self.words["live_view_title"])
        await expect(frame_element).to_be_visible(timeout=self._timeout_ms)
        handle = await frame_element.element_handle()
        frame = await handle.content_frame()
        if frame is None:
            raise LookupError("the login dialog's live view has no document")
        await frame.wait_for_url(re.compile(r"/live/"), timeout=self._timeout_ms)
        user = LiveViewUser(
            viewer=self.page, browser=self._browser, frame=frame, timeout_s=self._timeout_ms / 1000
        )
        await user.attach()
        return user

    async def wait_for_capture_state(self, key: str) -> None:
        status = self.login_dialog().get_by_role("status")
        await expect(status).to_have_text(self.words[key], timeout=self._timeout_ms)

    async def save(self) -> None:
        await self.button("save", self.login_dialog()).click()
