"""The web app as a person uses it: headless Chromium (Debian's ``chromium``) driven by Playwright, uploading a photo,
clicking through the Review view, reloading the page. Skipped with the reason where no Chromium or Playwright is
found (.ci/run installs both)."""

import shutil

import pytest

pytest.importorskip("gradio", reason="the app's extra: pip install -r requirements-app.txt")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get install chromium)")]

from features.webapp import app  # noqa: E402
from helpers import classified_with_corrections, colour_run  # noqa: E402

TIMEOUT = 120_000  # ms: a first answer builds the network


@pytest.fixture(scope="module")
def browser_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    photos, cache, run, planted = colour_run(root)
    made = app([root / "runs"], corrections=root / "corrections.jsonl", audits_dir=root / "audits")
    _, url, _ = made.launch(port=None)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield url, made, browser, photos, cache, run, planted
        browser.close()
    made.close()


def _page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url, wait_until="networkidle", timeout=TIMEOUT)
    return page, requested


def test_a_photo_uploaded_in_try_it_shows_its_class_and_a_heatmap(browser_app, tmp_path):
    url, _, browser, photos, *_ = browser_app
    page, requested = _page(browser, url)
    page.set_input_files("#photo input[type=file]", str(photos / "blue" / "blue4.png"))
    page.wait_for_function("document.querySelector('#top') && document.querySelector('#top').innerText"
                           ".includes('blue')", timeout=TIMEOUT)
    page.wait_for_selector("#heatmap img", timeout=TIMEOUT)
    assert "answered by" in page.inner_text("#info")
    top = page.inner_text("#top")
    assert [line.strip() for line in top.strip().splitlines()][:2] == ["Top classes", "blue"], top
    page.screenshot(path=str(tmp_path / "try.png"))
    outside = [u for u in requested if not u.startswith(url.rstrip("/")) and not u.startswith("data:")
               and not u.startswith("blob:")]
    assert not outside, outside  # the page loaded complete without the internet


def test_a_planted_label_relabelled_in_review_is_there_after_a_reload_and_classify_honours_it(
        browser_app, tmp_path, run_main):
    url, made, browser, photos, cache, run, planted = browser_app
    page, _ = _page(browser, url)
    page.get_by_role("tab", name="Review").click()
    page.click("#run-audit")
    page.wait_for_function(f"document.querySelector('#findings').innerText.includes('{planted[0]}')",
                           timeout=TIMEOUT)
    page.locator("#findings").get_by_text(planted[0], exact=True).first.click()
    page.wait_for_function(f"document.querySelector('#chosen textarea, #chosen input').value === '{planted[0]}'",
                           timeout=TIMEOUT)
    page.click("#relabel")
    page.wait_for_function("document.querySelector('#said').innerText.includes('saved')", timeout=TIMEOUT)
    assert f"relabel {planted[0]} as blue: saved" in page.inner_text("#said")
    page.reload(wait_until="networkidle")
    page.get_by_role("tab", name="Review").click()
    page.wait_for_function("document.querySelector('#findings').innerText.includes('relabel as blue')",
                           timeout=TIMEOUT)
    shown = page.inner_text("#findings")
    # each planted photo suggested "relabel as blue"; the decision taken says it once more, after a reload
    assert planted[0] in shown and shown.count("relabel as blue") == len(planted) + 1
    assert page.inner_text("#review-status").startswith("1 of ")
    for photo_id in planted[1:]:  # the rest through the page's own endpoint, as a second tab would
        made.bench.decide(str(run), photo_id, "relabel", label="blue")
    result = classified_with_corrections(run_main, cache, made.bench.corrections, out=tmp_path / "runs")
    assert result["corrections"]["relabelled"] == len(planted)
    assert result["accuracy"] >= result["corrections"]["uncorrected_test_accuracy"]
