"""The page on a phone: time to percentages and to heatmap over an emulated mobile link.

    python -m bench.phone [--runs 3] [--baseline b15beb7]

Chromium at phone width, its network shaped through the DevTools protocol
(`Network.emulateNetworkConditions`), picks a 12-megapixel phone photo (4000×3000 JPEG with an
EXIF orientation and a GPS block). Every upload passes a capture proxy that counts the bytes
and keeps what the functions received. Today's page and the page of `--baseline` (checked out
from git) run against the same local stack on the same links in the same run, warm and cold
(fresh function servers). It also times the two ways one upload could serve the page, from
the browser on the same link: gradcam alone (its answer ranks every class and maps the top
one) against predict and gradcam in parallel. Writes bench/phone.json and prints a table.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import ExifTags, Image

from devstack import browser as chromium

ROOT = Path(__file__).resolve().parents[1]
PHONE = {"width": 390, "height": 844}
# name → (uplink kbit/s, downlink kbit/s, round-trip latency ms)
LINKS = {"mobile": (1500, 9000, 150), "slow": (400, 400, 400)}


def phone_photo(seed: int = 4) -> bytes:
    """A 4000×3000 JPEG as a phone writes it: sensor noise, quality 92, EXIF orientation 6
    (shown rotated 90°: upright it is portrait) and a GPS position."""
    from model_store.synthetic import lesion_image

    pixels, _ = lesion_image(seed, 0, 750, 4)
    big = Image.fromarray(pixels).resize((4000, 3000), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0, 6, (3000, 4000, 3))
    big = Image.fromarray(np.clip(np.asarray(big) + noise, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "PhoneMaker"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps.update({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


@dataclass
class Upload:
    path: str
    bytes: int
    image: bytes  # the file part of the multipart body, as the function received it


@dataclass
class CaptureProxy:
    """Forwards to the functions and keeps every POST body: what leaves the device."""

    targets: dict[str, str]  # first path segment → function URL
    uploads: list[Upload] = field(default_factory=list)
    url: str = ""
    delay_s: float = 0.0  # held before answering a POST: a slow (cold) instance

    def handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self, method: str) -> None:
                path, _, query = self.path.partition("?")
                name, _, rest = path.lstrip("/").partition("/")
                target = proxy.targets[name] + "/" + rest + (f"?{query}" if query else "")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if method == "POST":
                    part = _file_part(body, self.headers.get("Content-Type", ""))
                    proxy.uploads.append(Upload(name, len(body), part))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.request(method, target, data=body, headers=headers, timeout=120)
                if method == "POST" and proxy.delay_s:
                    time.sleep(proxy.delay_s)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def do_POST(self) -> None:  # noqa: N802
                self._forward("POST")

            def do_GET(self) -> None:  # noqa: N802
                self._forward("GET")

            def do_OPTIONS(self) -> None:  # noqa: N802
                self._forward("OPTIONS")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _file_part(body: bytes, content_type: str) -> bytes:
    if "boundary=" not in content_type:
        return body
    boundary = content_type.split("boundary=", 1)[1].encode()
    for part in body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if b'name="image"' in head:
            return data.rsplit(b"\r\n", 1)[0]
    return b""


@contextmanager
def capture(targets: dict[str, str]):  # noqa: ANN201 - yields a CaptureProxy
    proxy = CaptureProxy(targets)
    server = ThreadingHTTPServer(("127.0.0.1", 0), proxy.handler())
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


def emulate(page, link: str) -> None:  # noqa: ANN001 - a Playwright page
    up, down, latency = LINKS[link]
    session = page.context.new_cdp_session(page)
    session.send("Network.enable")
    session.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": latency,
            "uploadThroughput": up * 1000 / 8,
            "downloadThroughput": down * 1000 / 8,
        },
    )


def config_route(page, predict_url: str, gradcam_url: str) -> None:  # noqa: ANN001
    config = json.dumps({"predictUrl": predict_url, "gradcamUrl": gradcam_url})
    page.route(
        "**/config.js",
        lambda route: route.fulfill(
            content_type="text/javascript", body=f"window.DERMCAM_CONFIG = {config};"
        ),
    )


def time_photo(page, photo: Path, timeout_ms: int = 300_000) -> dict[str, float]:  # noqa: ANN001
    """Seconds from picking the photo to the ranked percentages and to the heatmap shown."""
    started = time.perf_counter()
    page.set_input_files("#file-input", str(photo))
    page.locator("#predictions li").first.wait_for(timeout=timeout_ms)
    percentages = time.perf_counter() - started
    page.wait_for_function(
        "() => { const o = document.getElementById('overlay');"
        " return !o.hidden && o.complete && o.naturalWidth > 0; }",
        timeout=timeout_ms,
    )
    return {
        "percentages_s": round(percentages, 2),
        "heatmap_s": round(time.perf_counter() - started, 2),
    }


def baseline_frontend(commit: str, into: Path) -> Path:
    """The page as it was at `commit` (git show of each file)."""
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", commit, "frontend/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    into.mkdir(parents=True, exist_ok=True)
    for name in listing:
        data = subprocess.run(
            ["git", "show", f"{commit}:{name}"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        (into / Path(name).name).write_bytes(data)
    return into


@contextmanager
def page_server(root: Path):  # noqa: ANN201 - yields the page URL
    from devstack import stack as devstack
    from harness import servers

    log = open(Path(tempfile.mkdtemp()) / "page.log", "ab")  # noqa: SIM115
    # config.js is routed
    server = devstack.start_page(servers.free_port(), "http://unused", "", log, root)
    try:
        servers.wait_until_up(server.url + "/", 20, server.proc)
        yield server.url
    finally:
        server.stop()
        log.close()


def _stack(tmp: Path):  # noqa: ANN202 - a devstack.Stack
    from devstack import stack as devstack

    return devstack.start(log_dir=tmp / f"logs-{time.monotonic_ns()}")


def _page_run(browser, page_url: str, proxy: CaptureProxy, link: str, photo: Path) -> dict:  # noqa: ANN001
    context = browser.new_context(viewport=PHONE, has_touch=True)
    page = context.new_page()
    config_route(page, f"{proxy.url}/predict", f"{proxy.url}/gradcam")
    page.goto(page_url + "/")
    emulate(page, link)
    before = len(proxy.uploads)
    times = time_photo(page, photo)
    times["uploaded_bytes"] = sum(u.bytes for u in proxy.uploads[before:])
    times["uploads"] = len(proxy.uploads) - before
    context.close()
    return times


STRATEGY_JS = """async ([predictUrl, gradcamUrl, data, parallel]) => {
  const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
  const photo = {blob: new Blob([bytes], {type: "image/jpeg"}), name: "photo.jpg"};
  const started = performance.now();
  let percentages = null;
  const explained = DermcamApi.post(gradcamUrl, photo, {method: "gradcam"});
  if (parallel) {
    await DermcamApi.post(predictUrl, photo, {});
    percentages = performance.now() - started;
  }
  await explained;
  const both = performance.now() - started;
  return {percentages_s: (percentages ?? both) / 1000, heatmap_s: both / 1000};
}"""


def _strategy_run(
    browser: Any, page_url: str, stack: Any, link: str, prepared: bytes, parallel: bool
) -> dict:
    import base64

    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    config_route(page, stack.predict_url, stack.gradcam_url)
    page.goto(page_url + "/")
    page.wait_for_function("() => window.DermcamApi !== undefined")
    emulate(page, link)
    data = base64.b64encode(prepared).decode()
    result = page.evaluate(STRATEGY_JS, [stack.predict_url, stack.gradcam_url, data, parallel])
    context.close()
    return {k: round(v, 2) for k, v in result.items()}


def _median(rows: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 2)


def _series(runs: int, measure) -> list[dict]:  # noqa: ANN001 - (stack) -> dict
    """One cold run on fresh function servers, then `runs` warm ones on the same servers."""
    import tempfile as _tempfile

    stack = _stack(Path(_tempfile.mkdtemp(prefix="phone-stack-")))
    try:
        return [{"state": state, **measure(stack)} for state in ["cold"] + ["warm"] * runs]
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(
        prog="python -m bench.phone",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=2, help="warm runs per page and link")
    parser.add_argument("--baseline", default="b15beb7", help="the commit of today's page")
    parser.add_argument("--out", default=str(ROOT / "bench" / "phone.json"))
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="phone-"))
    photo = tmp / "IMG_2041.jpg"
    photo.write_bytes(phone_photo())
    pages = {"old": baseline_frontend(args.baseline, tmp / "old"), "new": ROOT / "frontend"}
    results: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "photo_bytes": photo.stat().st_size,
        "baseline": args.baseline,
        "links": LINKS,
        "pages": {},
        "strategies": {},
    }
    with sync_playwright() as playwright:
        browser = chromium.launch(playwright)
        for name, root in pages.items():
            with page_server(root) as page_url:
                for link in LINKS:

                    def through_page(stack, page_url=page_url, link=link) -> dict:  # noqa: ANN001
                        targets = {"predict": stack.predict_url, "gradcam": stack.gradcam_url}
                        with capture(targets) as proxy:
                            return _page_run(browser, page_url, proxy, link, photo)

                    rows = _series(args.runs, through_page)
                    print(f"{name} page, {link} link: {rows}", flush=True)
                    results["pages"].setdefault(name, {})[link] = rows
        # One upload serving the page: gradcam alone, or predict and gradcam in parallel.
        with page_server(pages["new"]) as page_url:
            prepared = _prepared_copy(browser, page_url, tmp, photo)
            for link in LINKS:
                for parallel in (False, True):

                    def strategy(stack, page_url=page_url, link=link, parallel=parallel) -> dict:  # noqa: ANN001
                        return _strategy_run(browser, page_url, stack, link, prepared, parallel)

                    key = f"{link}/{'parallel' if parallel else 'gradcam-only'}"
                    results["strategies"][key] = _series(args.runs, strategy)
                    print(f"strategy {key}: {results['strategies'][key]}", flush=True)
        browser.close()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


def _prepared_copy(browser, page_url: str, tmp: Path, photo: Path) -> bytes:  # noqa: ANN001
    """What the page sends for the photo: captured once through the proxy."""
    stack = _stack(tmp)
    try:
        with capture({"predict": stack.predict_url, "gradcam": stack.gradcam_url}) as proxy:
            _page_run(browser, page_url, proxy, "mobile", photo)
            return proxy.uploads[0].image
    finally:
        stack.stop()


def report(results: dict) -> str:
    lines = [
        f"Photo: {results['photo_bytes']:,} bytes (4000×3000 JPEG). Medians of warm runs; "
        "cold: fresh function servers, the photo picked as soon as the page loaded.",
        "",
        "| link | page | cold: percentages / heatmap (s) | warm: percentages / heatmap (s) "
        "| bytes uploaded per photo | uploads |",
        "|---|---|---|---|---|---|",
    ]
    for link in LINKS:
        for name in ("old", "new"):
            rows = results["pages"][name][link]
            cold = rows[0]
            warm = [r for r in rows if r["state"] == "warm"]
            lines.append(
                f"| {link} {LINKS[link]} | {name} | {cold['percentages_s']} / {cold['heatmap_s']} "
                f"| {_median(warm, 'percentages_s')} / {_median(warm, 'heatmap_s')} "
                f"| {warm[0]['uploaded_bytes']:,} | {warm[0]['uploads']} |"
            )
        old = _median(
            [r for r in results["pages"]["old"][link] if r["state"] == "warm"], "heatmap_s"
        )
        new = _median(
            [r for r in results["pages"]["new"][link] if r["state"] == "warm"], "heatmap_s"
        )
        lines.append(f"| {link} | new ÷ old | | {new / old:.3f}× time to heatmap | | |")
    lines += [
        "",
        "| link / strategy | cold: percentages / both answers (s) | warm (median) |",
        "|---|---|---|",
    ]
    for key, rows in results["strategies"].items():
        warm = [r for r in rows if r["state"] == "warm"]
        lines.append(
            f"| {key} | {rows[0]['percentages_s']} / {rows[0]['heatmap_s']} "
            f"| {_median(warm, 'percentages_s')} / {_median(warm, 'heatmap_s')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
