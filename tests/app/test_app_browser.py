"""The page as a person sees it: Debian's Chromium driven by Playwright against a real ``app.py``.

Checks are made on screenshots (pixels inside an element's box) and on what covers an element (the
topmost element at its centre), not on DOM attributes alone. With PSD_GS_SCREENSHOTS=<folder> the tests
also write the README's screenshots there (app-mid-run.png, app-compare.png, app-mesh.png, app-mobile.png).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.app.server import start_app

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RUN_TIMEOUT_MS = 240_000


# issue 21's goal, 10 s; twice that on a loaded machine: CI, or a second pytest-xdist worker beside this one
# (measured: 3.3 s on an idle machine; 10.1 s with the other worker and a benchmark running)
LOADED = bool(os.environ.get("CI")) or int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1) > 1
FIRST_IMAGE_S = 10.0 * (2 if LOADED else 1)


@pytest.fixture(scope="module")
def server_cache(tmp_path_factory):
    """The module's server starts with an empty model cache, as a new user's does."""
    return tmp_path_factory.mktemp("app-browser-cache")


@pytest.fixture(scope="module")
def server(tmp_path_factory, server_cache):
    with start_app(tmp_path_factory.mktemp("app-browser"), server_cache) as served:
        yield served


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(autouse=True)
def close_pages(browser):
    """Every page a test opened is closed after it, passed or failed: a page left open (a 3D viewer keeps
    drawing through SwiftShader) would take the CPU from the tests after it."""
    yield
    for context in browser.contexts:
        context.close()


def wait_drawn(page, selector: str, share: float = 0.01, timeout_s: float = 90.0) -> np.ndarray:
    """The element's pixels once more than ``share`` of them are drawn (a viewer loads and frames its file
    over a few frames); the last screenshot if that never happens. A viewer may replace its canvas while
    it loads (the Mesh tab gives its viewer the file again when selected): then look again."""
    from playwright.sync_api import Error as PlaywrightError

    deadline = time.monotonic() + timeout_s
    img = np.zeros((1, 1, 3), np.uint8)
    while True:
        try:
            img = pixels(page, selector, timeout_ms=5_000)
        except PlaywrightError:  # the canvas was detached between finding it and its screenshot
            pass
        if drawn_share(img) > share or time.monotonic() > deadline:
            return img
        time.sleep(1.0)


# Headless Chromium draws WebGL on the CPU (SwiftShader), and the 3D viewers redraw at 60 frames a second
# whether or not anything moves: one viewer on the page took 1.7 of this machine's 2 cores, starving the
# app server under test (a Compare run outran the 300 s test timeout). Every animation frame is delayed
# by 500 ms, so a viewer draws at most 2 frames a second: the same pictures, half the CPU (measured).
SLOW_FRAMES = """
const frame = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (callback) => setTimeout(() => frame(callback), 500);
"""


def open_page(browser, url: str, width: int = 1400, height: int = 900, context=None):
    page = (context or browser.new_context(viewport={"width": width, "height": height})).new_page()
    page.add_init_script(SLOW_FRAMES)
    page.goto(url)
    page.locator("#generate").wait_for()
    return page


def keep_screenshot(page, name: str, full_page: bool = False) -> None:
    folder = os.environ.get("PSD_GS_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=full_page)


def pixels(page, selector: str, timeout_ms: float = 30_000) -> np.ndarray:
    """What the screen shows inside the element's box, [H, W, 3] uint8."""
    shot = page.locator(selector).first.screenshot(timeout=timeout_ms)
    return np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))


def drawn_share(img: np.ndarray) -> float:
    """The share of pixels that differ from the most common colour (the background)."""
    flat = img.reshape(-1, 3).astype(int)
    values, counts = np.unique(flat, axis=0, return_counts=True)
    return float((np.abs(flat - values[counts.argmax()]).sum(1) > 30).mean())


def uncovered(page, selector: str) -> bool:
    """Whether the topmost element at the centre of ``selector``'s box belongs to it (no overlay on top)."""
    box = page.locator(selector).first.bounding_box()
    return page.evaluate("([x, y, sel]) => document.querySelector(sel).contains(document.elementFromPoint(x, y))",
                         [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, selector])


def set_steps(page, steps: int) -> None:
    """Open Settings, set the number of steps, close Settings again. The value is read back a moment later
    and set again if something reset it (seen: a run of the preset's 400 steps where 100 were typed)."""
    from playwright.sync_api import expect

    toggle = page.locator("#settings").get_by_text("Settings", exact=True)
    toggle.click()
    field = page.locator("#ctl-steps input")
    for _ in range(3):
        field.fill(str(steps))
        field.press("Tab")
        time.sleep(1.0)
        if field.input_value() == str(steps):
            break
    expect(field).to_have_value(str(steps))
    toggle.click()


def click_generate(page) -> None:
    """Click Generate once the page lets one (a loaded CI machine can take a while to settle a fresh page)."""
    from playwright.sync_api import expect

    expect(page.locator("#generate")).to_be_enabled(timeout=120_000)
    page.locator("#generate").click(timeout=120_000)


def start(page, prompt: str, steps: int) -> None:
    page.locator("#prompt textarea").fill(prompt)
    set_steps(page, steps)
    click_generate(page)


def wait_done(page) -> None:
    page.locator("#status").get_by_text("Done.").wait_for(timeout=RUN_TIMEOUT_MS)


def test_first_screen_holds_the_prompt_generate_live_render_and_plots(browser, server):
    url, _ = server
    page = open_page(browser, url, 1400, 900)
    for selector in ("#prompt", "#generate", "#stop", "#preview", "#reward-plot", "#loss-plot", "#status"):
        box = page.locator(selector).first.bounding_box()
        assert box and box["x"] >= 0 and box["y"] >= 0, selector
        assert box["x"] + box["width"] <= 1400 and box["y"] + box["height"] <= 900, f"{selector} is below the fold"
    assert drawn_share(pixels(page, "#reward-plot")) > 0.02  # the charts draw their axes from the start
    page.context.close()


def test_the_first_click_on_a_fresh_install_shows_the_object_within_seconds(browser, server, server_cache):
    """A new user: empty model cache, the page's defaults (which are the preset's), first click. The first
    live image is on screen within 10 s (issue 21)."""
    from psd_gs.config import preset

    url, _ = server
    assert not list(server_cache.iterdir()), "this test needs the server's first run on an empty cache"
    page = open_page(browser, url)
    page.locator("#settings").get_by_text("Settings", exact=True).click()
    shown = {name: page.locator(f"#ctl-{name} input").first.input_value() for name in ("steps", "resolution")}
    base = preset("shapes")
    assert shown == {"steps": str(base.steps), "resolution": f"{base.camera.resolution[-1][1]} px"}, shown
    assert page.locator("#prompt textarea").input_value() == "a sphere"
    assert drawn_share(pixels(page, "#preview")) < 0.05  # the placeholder: a dashed box and a line of text
    click_generate(page)
    t0 = time.monotonic()
    while True:  # what the screen shows inside the live render's box: an object, once the first render arrives
        if page.locator("#preview img").count() and drawn_share(pixels(page, "#preview", timeout_ms=5_000)) > 0.05:
            break
        assert time.monotonic() - t0 < FIRST_IMAGE_S, "no live image within the first seconds of a fresh install"
        time.sleep(0.2)
    first_image_s = time.monotonic() - t0
    print(f"first live image {first_image_s:.1f} s after the click (empty cache)")
    assert page.locator("#preview img").count() == 1 and uncovered(page, "#preview")
    page.locator("#stop").click()
    page.locator("#status").get_by_text("Stopped").wait_for(timeout=RUN_TIMEOUT_MS)
    page.context.close()


def test_the_object_is_visible_while_it_grows(browser, server):
    url, _ = server
    page = open_page(browser, url)
    start(page, "a sphere", steps=100)  # about 25 s in the app on 2 CPUs beside the browser
    page.locator("#preview img").wait_for(timeout=RUN_TIMEOUT_MS)
    page.locator("#status").get_by_text("step ").wait_for(timeout=RUN_TIMEOUT_MS)
    assert not page.locator("#generate").is_enabled()  # one run at a time, visibly
    first = pixels(page, "#preview")
    keep_screenshot(page, "app-mid-run.png")
    deadline = time.monotonic() + 15.0  # a preview every few steps; a busy CPU can stall a step or two
    while True:
        time.sleep(1.0)
        second = pixels(page, "#preview")
        changed = first.shape == second.shape and np.abs(first.astype(int) - second.astype(int)).mean() > 0.5
        if changed or time.monotonic() > deadline:
            break
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 30, "the live render is a uniform block (an overlay?)"
    assert drawn_share(first) > 0.05  # an object, not an empty frame
    assert changed, "the live render did not change in 15 s of the run"
    for selector in ("#preview", "#reward-plot", "#loss-plot"):
        assert uncovered(page, selector), f"something covers {selector} mid-run"
    text = page.locator("#preview").inner_text()
    assert "%" not in text and "step" not in text.lower() and "eta" not in text.lower()  # no progress text on it
    assert "step " in page.locator("#status").inner_text()  # progress lives in the status line
    wait_done(page)
    assert page.locator("#generate").is_enabled()
    summary = page.locator("#summary")
    assert "over 8 views" in summary.inner_text()
    # how PSD's pair acted, in the result line a person reads (issue 24), and nothing covers it
    assert "Preference pairs: the reward separated the candidates in" in summary.inner_text()
    summary.scroll_into_view_if_needed()
    assert uncovered(page, "#summary")
    page.context.close()


def test_a_finished_run_comes_back_from_the_history_after_a_reload(browser, server):
    url, _ = server
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = open_page(browser, url, context=context)
    start(page, "a torus", steps=40)
    wait_done(page)
    page.locator("#model3d canvas").first.wait_for(timeout=60_000)
    time.sleep(3)
    assert drawn_share(pixels(page, "#model3d canvas")) > 0.01, "the 3D viewer drew nothing"
    page.reload()  # the same browser: its history is kept (its token lives in localStorage)
    page.locator("#history").get_by_text("a torus").filter(visible=True).first.wait_for(timeout=30_000)
    assert not page.locator("#model3d canvas").count()  # nothing shown until chosen
    page.locator("#history").get_by_text("a torus").filter(visible=True).first.click()
    page.locator("#status").get_by_text("Showing an earlier run").wait_for(timeout=30_000)
    page.locator("#model3d canvas").first.wait_for(timeout=60_000)
    time.sleep(3)
    assert drawn_share(pixels(page, "#model3d canvas")) > 0.01, "the chosen run's splat is not drawn"
    assert "over 8 views" in page.locator("#summary").inner_text()
    other = open_page(browser, url)  # another browser (a new context): not its history
    time.sleep(2)
    assert "a torus" not in other.locator("#history").inner_text()
    other.context.close()
    context.close()


def test_compare_shows_both_objects_and_the_reward_per_view(browser, server):
    url, _ = server
    page = open_page(browser, url)
    page.locator(".gallery-item, tr.tr-body, button.gallery").first.click()  # the first example row
    from playwright.sync_api import expect

    expect(page.locator("#prompt textarea")).to_have_value("a sphere")  # waits for the example to fill in
    expect(page.locator("#compare input")).to_be_checked()
    # 200 steps for the README's screenshot (both objects formed); 120 are enough to draw both in CI
    set_steps(page, 200 if os.environ.get("PSD_GS_SCREENSHOTS") else 120)
    click_generate(page)
    page.locator("#status").get_by_text("SDS pass").wait_for(timeout=RUN_TIMEOUT_MS)  # the SDS pass shows progress
    wait_done(page)
    page.get_by_role("tab", name="Compare with SDS").click()
    for selector in ("#compare-main canvas", "#compare-sds canvas"):
        page.locator(selector).first.wait_for(timeout=60_000)
    time.sleep(3)
    assert drawn_share(pixels(page, "#compare-main canvas")) > 0.01
    assert drawn_share(pixels(page, "#compare-sds canvas")) > 0.01
    assert drawn_share(pixels(page, "#compare-plot")) > 0.02
    assert "Against SDS with the same seed" in page.locator("#compare-words").inner_text()
    keep_screenshot(page, "app-compare.png", full_page=True)
    page.get_by_role("tab", name="Mesh").click()  # the same run's mesh.glb, in its own viewer
    page.locator("#mesh3d canvas").first.wait_for(timeout=60_000)
    mesh = wait_drawn(page, "#mesh3d canvas")
    assert drawn_share(mesh) > 0.01, "the mesh viewer drew nothing"
    rgb = mesh.reshape(-1, 3).astype(int)
    drawn = rgb[np.abs(rgb - np.median(rgb, 0)).sum(1) > 30]  # pixels unlike the background
    chroma = drawn.max(1) - drawn.min(1)
    assert (chroma > 60).mean() > 0.5, "the mesh is drawn without its vertex colours (grey)"
    assert uncovered(page, "#mesh3d canvas")
    keep_screenshot(page, "app-mesh.png")
    page.context.close()


def test_a_narrow_screen_stacks_the_controls_above_the_render(browser, server):
    url, _ = server
    page = open_page(browser, url, 390, 844)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= page.evaluate("window.innerWidth")
    prompt, render = page.locator("#prompt").bounding_box(), page.locator("#preview").bounding_box()
    assert prompt["y"] + prompt["height"] <= render["y"] and page.locator("#generate").bounding_box()["y"] < render["y"]
    assert render["x"] >= 0 and render["x"] + render["width"] <= 390
    keep_screenshot(page, "app-mobile.png", full_page=True)
    page.context.close()


def test_html_in_a_prompt_is_text_and_the_error_sits_by_the_prompt(browser, server):
    url, runs = server
    page = open_page(browser, url)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    hostile = "<img src=x onerror=alert(1)>"
    before = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    page.locator("#prompt textarea").fill(hostile)
    click_generate(page)
    page.locator("#prompt").get_by_text("does not know").wait_for(timeout=30_000)
    time.sleep(1)
    assert dialogs == [] and page.locator("img[src='x']").count() == 0  # never rendered
    assert "<img src=x" in page.locator("#prompt").inner_text()  # shown as text, next to the prompt
    assert page.locator("#prompt textarea").input_value() == hostile  # what the user typed is kept
    assert page.locator("#generate").is_enabled()
    assert (sorted(p.name for p in runs.iterdir()) if runs.exists() else []) == before  # nothing started
    page.context.close()


def test_stop_keeps_what_exists(browser, server):
    url, _ = server
    page = open_page(browser, url)
    start(page, "a cube", steps=400)
    page.locator("#status").get_by_text("step ").first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.locator("#stop").click()
    page.locator("#status").get_by_text("Stopped").wait_for(timeout=RUN_TIMEOUT_MS)
    assert "stopped early" in page.locator("#summary").inner_text()
    page.locator("#model3d canvas").first.wait_for(timeout=60_000)
    assert page.locator("#generate").is_enabled()
    page.context.close()


def drop_splat(page, path: Path) -> None:
    """Open "Refine a splat" and give its upload the file, as a person choosing it in the file dialog."""
    page.locator("#refine").get_by_text("Refine a splat", exact=True).click()
    page.locator("#ctl-scene-init input[type=file]").set_input_files(str(path))


def test_refine_a_splat_shows_it_beside_the_live_render_and_keeps_it_only_in_the_run(browser, server, tmp_path):
    """Issue 26: a .ply dropped on the page is shown as it will be refined, Refine runs from it, and afterwards
    the file exists only as the run folder's input.ply (the upload is gone from Gradio's folder)."""
    from playwright.sync_api import expect

    from psd_gs.priors.shapes_world import ShapesWorld
    from psd_gs.scene.ply import save_ply

    url, runs = server
    ply = save_ply(ShapesWorld().build(2), tmp_path / "my-green-cube.ply")  # the warm reward prefers red
    page = open_page(browser, url)
    page.locator("#prompt textarea").fill("a cube")
    drop_splat(page, ply)
    expect(page.locator("#generate")).to_have_text("Refine", timeout=60_000)
    img = wait_drawn(page, "#input-view img", share=0.05, timeout_s=60)
    assert drawn_share(img) > 0.05 and uncovered(page, "#input-view")
    green = img.reshape(-1, 3).astype(int)
    assert ((green[:, 1] > green[:, 0] + 40) & (green[:, 1] > green[:, 2] + 40)).mean() > 0.03  # the green cube
    assert "my-green-cube.ply: 400 Gaussians" in page.locator("#input-view").inner_text()
    set_steps(page, 12)
    click_generate(page)
    page.locator("#status").get_by_text("Done.").wait_for(timeout=RUN_TIMEOUT_MS)
    assert "The reward went from" in page.locator("#summary").inner_text()
    assert drawn_share(pixels(page, "#preview")) > 0.02 and drawn_share(pixels(page, "#input-view img")) > 0.05
    keep_screenshot(page, "app-refine.png")
    copies = list(runs.rglob("input.ply"))
    assert any(c.read_bytes() == ply.read_bytes() for c in copies)
    gradio_dir = runs.parent / "gradio"
    deadline = time.monotonic() + 10
    while any(gradio_dir.rglob("my-green-cube.ply")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(gradio_dir.rglob("my-green-cube.ply")), "the upload stayed in Gradio's folder"
    expect(page.locator("#generate")).to_have_text("Generate")


def test_refine_refuses_an_oversized_upload_and_a_file_that_is_not_a_splat(browser, server, tmp_path):
    from playwright.sync_api import expect

    from psd_gs.app.serve import MAX_UPLOAD

    url, runs = server
    page = open_page(browser, url)
    big = tmp_path / "huge.ply"
    big.write_bytes(b"p" * (MAX_UPLOAD + 1))
    drop_splat(page, big)
    toast = page.locator(".toast-body").first
    toast.wait_for(timeout=30_000)
    assert "size" in toast.inner_text().lower()
    assert drawn_share(pixels(page, ".toast-body")) > 0.02 and uncovered(page, ".toast-body")
    assert not page.locator("#input-view").is_visible()  # nothing was taken
    expect(page.locator("#generate")).to_have_text("Generate")
    page.reload()
    page.locator("#generate").wait_for()
    text = tmp_path / "notes.ply"
    text.write_text("ply? no, my shopping list")
    drop_splat(page, text)
    view = page.locator("#input-view")
    view.get_by_text("Not refined").wait_for(timeout=60_000)
    assert "notes.ply is not a readable PLY file" in view.inner_text() and "/tmp" not in view.inner_text()
    assert drawn_share(pixels(page, "#input-view")) > 0.005 and uncovered(page, "#input-view")
    expect(page.locator("#generate")).to_have_text("Generate")
