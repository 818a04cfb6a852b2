"""Click-to-frame latency of the live view, measured end to end on loopback.

A local page changes the colour of a swatch on every click. One headless Chromium shows it
(the remote browser); a second headless Chromium opens its live view (the user). For each
click the viewer page records ``performance.now()`` in its own ``mousedown`` listener, and
again after drawing the first frame whose swatch pixel has the new colour. The difference
covers input over the WebSocket, CDP dispatch, the remote repaint, screencast capture and
JPEG encoding, the frame over the WebSocket, and JPEG decode and draw in the viewer; it
leaves out only the viewer's own compositor (at most one display frame).

Run: ``python -m workers.dev.bench.liveview [--clicks N]`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web
from playwright.async_api import Browser, Playwright, async_playwright

from workers.browser.chromium import browser_launch_options, find_chromium
from workers.browser.liveview import LiveViewServer

COLOURS = ((220, 40, 40), (30, 160, 60), (40, 80, 220), (230, 200, 30), (150, 40, 170))
SWATCH = 200  # CSS px, top-left of the page
_FILLER = " ".join(f"item-{i} lorem ipsum dolor sit amet" for i in range(400))

REMOTE_PAGE = f"""<!doctype html><html><head><title>bench</title><style>
body {{ margin: 0; font: 14px sans-serif; }}
#swatch {{ position: fixed; left: 0; top: 0; width: {SWATCH}px; height: {SWATCH}px; }}
#text {{ margin-left: {SWATCH + 10}px; padding: 8px; color: #333; }}
</style></head><body>
<div id="swatch"></div><div id="text">{_FILLER}</div>
<script>
const colours = {json.dumps([f"rgb({r},{g},{b})" for r, g, b in COLOURS])};
let n = 0;
const swatch = document.getElementById("swatch");
swatch.style.background = colours[0];
document.addEventListener("click", () => {{
  n += 1;
  swatch.style.background = colours[n % colours.length];
}});
</script></body></html>"""

# Installed in the viewer page: timestamps taken there, on the viewer's own clock.
VIEWER_PROBE = """({swatch, colours}) => {
  const lv = window.liveview, b = window.__bench = {t0: null, wall0: 0, want: null, done: null};
  lv.canvas.addEventListener("mousedown", () => {
    b.t0 = performance.now(); b.wall0 = Date.now();
  }, true);
  lv.onFrame = (meta) => {
    if (b.t0 === null) return;
    const c = lv.canvas, k = c.width / meta.w, at = Math.floor(swatch / 2 * k);
    const px = c.getContext("2d").getImageData(at, at, 1, 1).data;
    const want = colours[b.want];
    if (Math.abs(px[0] - want[0]) + Math.abs(px[1] - want[1]) + Math.abs(px[2] - want[2]) < 60) {
      const total = performance.now() - b.t0, swap = meta.ts * 1000;
      b.t0 = null;
      b.done([total, swap - b.wall0, Date.now() - swap]);
    }
  };
  b.arm = (index) => {
    b.want = index;
    b.result = new Promise((resolve) => { b.done = resolve; });
  };
}"""


@asynccontextmanager
async def _remote_site() -> AsyncIterator[str]:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=REMOTE_PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def _launch(pw: Playwright, executable: str) -> Browser:
    return await pw.chromium.launch(
        headless=True, timeout=30_000, **browser_launch_options(executable)
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def measure_click_to_frame(
    *,
    clicks: int = 30,
    warmup: int = 3,
    viewer_size: tuple[int, int] = (1280, 800),
    jpeg_quality: int = 70,
    chromium_path: str = "",
    click_timeout: timedelta = timedelta(seconds=5),
) -> dict[str, Any]:
    """Click ``clicks`` times through the live view; latency percentiles in milliseconds."""
    executable = find_chromium(chromium_path)
    timeout_s = click_timeout.total_seconds()
    samples: list[float] = []
    to_swap: list[float] = []  # click -> remote frame swap (input, repaint)
    from_swap: list[float] = []  # remote frame swap -> drawn in the viewer (encode, send, decode)
    missed = 0
    async with (
        _remote_site() as site,
        async_playwright() as pw,
        LiveViewServer.start(host="127.0.0.1", port=0, jpeg_quality=jpeg_quality) as server,
    ):
        remote_browser = await _launch(pw, executable)
        user_browser = await _launch(pw, executable)
        try:
            context = await remote_browser.new_context()
            context.set_default_timeout(timeout_s * 1000)
            remote = await context.new_page()
            await remote.goto(site)
            token = server.register(
                capture_id="bench",
                owner_id="bench",
                context=context,
                page=remote,
                state_getter=lambda: "open",
            )
            width, height = viewer_size
            viewer = await user_browser.new_page(viewport={"width": width, "height": height})
            viewer.set_default_timeout(timeout_s * 1000)
            await viewer.goto(server.url_for("bench", token))
            await viewer.wait_for_function(
                """() => { const lv = window.liveview, s = document.getElementById('stage');
                    return lv.frames > 0 && lv.lastFrame.w === s.clientWidth; }"""
            )
            await viewer.evaluate(VIEWER_PROBE, {"swatch": SWATCH, "colours": COLOURS})
            box = await viewer.evaluate(
                "() => { const r = window.liveview.canvas.getBoundingClientRect();"
                " return [r.left + r.width / 2, r.top + r.height / 2]; }"
            )
            for i in range(warmup + clicks):
                want = (i + 1) % len(COLOURS)
                await viewer.evaluate(f"() => window.__bench.arm({want})")
                await viewer.mouse.click(box[0], box[1])
                try:
                    total, before, after = await asyncio.wait_for(
                        viewer.evaluate("window.__bench.result"), timeout_s
                    )
                except TimeoutError:
                    missed += 1
                    await remote.evaluate(f"() => {{ n = {want}; }}")  # resynchronise
                    continue
                if i >= warmup:
                    samples.append(float(total))
                    to_swap.append(float(before))
                    from_swap.append(float(after))
                await asyncio.sleep(random.uniform(0.05, 0.15))  # no lock-step with frame timing
            frames_sent, frames_dropped = server.frames_sent, server.frames_dropped
        finally:
            await user_browser.close()
            await remote_browser.close()
    if not samples:
        raise RuntimeError("no click produced a frame with its effect")
    return {
        "clicks": len(samples),
        "missed": missed,
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(_percentile(samples, 0.95), 1),
        "min_ms": round(min(samples), 1),
        "max_ms": round(max(samples), 1),
        "mean_ms": round(statistics.fmean(samples), 1),
        "click_to_swap_p50_ms": round(statistics.median(to_swap), 1),
        "swap_to_drawn_p50_ms": round(statistics.median(from_swap), 1),
        "viewer_size": list(viewer_size),
        "jpeg_quality": jpeg_quality,
        "frames_sent": frames_sent,
        "frames_dropped": frames_dropped,
    }


def main(argv: list[str] | None = None) -> int:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: JSON
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--quality", type=int, default=70)
    parser.add_argument("--chromium", default="")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = asyncio.run(
        measure_click_to_frame(
            clicks=args.clicks,
            viewer_size=(args.width, args.height),
            jpeg_quality=args.quality,
            chromium_path=args.chromium,
        )
    )
    result["wall_s"] = round(time.monotonic() - started, 1)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
