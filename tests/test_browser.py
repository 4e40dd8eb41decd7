"""A real browser runs notebook 01 in JupyterLab, and the data browser widget works there.

nbval and the widget tests check Python objects; only a browser shows that the widget front end
(ipywidgets' JupyterLab extension) really draws the images and that clicking "Next ▶" round-trips
through the kernel. JupyterLab listens on loopback only, Chromium is headless, nothing is fetched
from the network. Screenshots go to the test's tmp_path and to runs/browser/ for a person to look at.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "01_become_one_with_the_data.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]  # containers often have a tiny /dev/shm
RUN_ALL_TIMEOUT = 900      # seconds; notebook 01 takes about 3 minutes on 2 busy CPU cores
SCREENSHOTS = ROOT / "runs" / "browser"

if not CHROMIUM.exists() and not Path("/etc/debian_version").exists():
    pytest.skip("needs Chromium at /usr/bin/chromium (on Debian, ./course test installs it)",
                allow_module_level=True)

pytestmark = pytest.mark.slow

# Settings JupyterLab reads from JUPYTERLAB_SETTINGS_DIR: every cell stays in the page (no windowing),
# and no news or update checks (they would go to the network and pop up over the screenshot).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_copy_of_notebook(folder):
    """Notebook 01 without outputs or saved widget state: whatever the browser shows, this run drew."""
    nb = nbformat.read(ROOT / "notebooks" / NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    (folder / "notebooks").mkdir(parents=True)
    nbformat.write(nb, folder / "notebooks" / NOTEBOOK)


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of notebook 01; yields its base URL and token."""
    root, home = tmp_path / "lab", tmp_path / "home"
    fresh_copy_of_notebook(root)
    for name, settings in LAB_SETTINGS.items():
        path = home / "lab-settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    token, port = "recipe-course-test", free_port()
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    log = open(tmp_path / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
         "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        + (["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyter.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url, token
    finally:
        stop(server)
        log.close()


def stop(server):
    """SIGTERM to the server's own process group (it and its kernel), SIGKILL if that is not enough."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
            server.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_state(page):
    """Prompts of all code cells ('[3]:', '[*]:', '[ ]:') and the kernel status JupyterLab shows."""
    return page.evaluate("""() => ({
        prompts: [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]
                    .map(p => p.textContent.trim()),
        kernel: document.querySelector('.jp-Notebook-ExecutionIndicator')?.getAttribute('data-status'),
    })""")


def run_all_cells(page, attempts=3):
    """Run > Run All Cells, again if no cell started within 30 s: a click that lands while the page is
    still connecting to its kernel is dropped (seen in CI), and the test would then wait for nothing."""
    for _ in range(attempts):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").click()
        deadline = time.time() + 30
        while time.time() < deadline:
            if any(p != "[ ]:" for p in run_state(page)["prompts"]):
                return
            time.sleep(1)
    pytest.fail(f"Run All Cells started no cell in {attempts} tries")


def wait_until_all_cells_ran(page, timeout):
    deadline, state = time.time() + timeout, None
    while time.time() < deadline:
        state = run_state(page)
        prompts = state["prompts"]
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts) and state["kernel"] in ("idle", None):
            return state
        time.sleep(2)
    pytest.fail(f"notebook did not finish within {timeout} s: {state}")


def image_contents(grid):
    """The pixels of every image in the grid, as data URLs (the <img> src itself is a fresh blob URL
    each time, so comparing it would prove nothing)."""
    return grid.evaluate("""grid => [...grid.querySelectorAll('img')].map(img => {
        if (!img.complete || img.naturalWidth === 0) return '';
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        canvas.getContext('2d').drawImage(img, 0, 0);
        return canvas.toDataURL();
    })""")


def test_notebook_01_runs_in_jupyterlab_and_the_data_browser_pages(jupyter_lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing at /usr/bin/chromium: `./course test` installs it on Debian "
                    "(or: apt-get install chromium)")
    url, token = jupyter_lab
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})  # the whole widget fits
        page.goto(f"{url}/lab/tree/notebooks/{NOTEBOOK}?reset&token={token}")
        expect(page.locator(".jp-Notebook .jp-CodeCell").first).to_be_visible(timeout=120_000)
        expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_visible(timeout=120_000)

        run_all_cells(page)
        state = wait_until_all_cells_ran(page, RUN_ALL_TIMEOUT)
        page.screenshot(path=tmp_path / "notebook_end.png")

        for n in (1, 2, 3):  # the exercise checks at the end ran and passed: the whole notebook worked
            expect(page.locator(".jp-OutputArea-output").get_by_text(f"Exercise {n}: correct")).to_be_visible()
        grid = page.locator(".rk-browser-grid").first
        widget = page.locator(".jp-OutputArea-output", has=grid).first
        widget.evaluate("element => element.scrollIntoView({block: 'start'})")
        expect(grid.locator("img").first).to_be_visible()
        page_label = widget.get_by_text(re.compile(r"^page \d+ / \d+$"))
        expect(page_label).to_have_text(re.compile(r"^page 1 / \d+$"))
        first_page = image_contents(grid)
        assert len(first_page) == 64 and all(first_page), "every tile of page 1 shows an image"
        page.screenshot(path=tmp_path / "data_browser_page1.png")

        next_button = widget.locator("button.rk-next")
        expect(next_button).to_have_text("Next ▶")
        next_button.click()
        expect(page_label).to_have_text(re.compile(r"^page 2 / \d+$"), timeout=60_000)
        deadline = time.time() + 60  # the label and the 64 images are separate widget messages
        while (second_page := image_contents(grid)) == first_page and time.time() < deadline:
            time.sleep(0.5)
        changed = sum(a != b for a, b in zip(first_page, second_page))
        assert all(second_page) and changed >= 60, f"only {changed} of 64 images changed on 'Next ▶'"
        page.screenshot(path=tmp_path / "data_browser_page2.png")
        browser.close()

    for name in ("notebook_end.png", "data_browser_page1.png", "data_browser_page2.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
        shutil.copy(tmp_path / name, SCREENSHOTS / name)
    assert len(state["prompts"]) >= 10
