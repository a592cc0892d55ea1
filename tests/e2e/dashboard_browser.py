"""The dashboard of `r1host serve` in headless Chromium (Selenium + Debian's chromedriver).

Run by host/tests/integration/dashboard_browser.rs against a real daemon that has a tiny model, a
state directory for jobs, an API key, and a `--runs` folder holding a crafted run whose
samples contain markup. Each check prints `ok <name>` or `FAIL <name>: why`; the last
line is `<passed> passed, <failed> failed`. Screenshots of every view go to --shots.
"""

import argparse
import os
import sys
import time
import traceback

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--recipe", required=True, help="a TOML recipe to start from the page")
    ap.add_argument("--fixture-run", required=True, help="id of the crafted run")
    ap.add_argument("--shots", required=True, help="folder for screenshots")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = ap.parse_args()
    os.makedirs(args.shots, exist_ok=True)
    recipe = open(args.recipe, encoding="utf-8").read()

    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
    driver.set_page_load_timeout(60)
    results = []

    def wait(cond, timeout=60, what="condition"):
        try:
            return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def shot(name):
        driver.save_screenshot(os.path.join(args.shots, name + ".png"))

    def check(name, f):
        try:
            f()
            results.append((name, None))
            print("ok", name, flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
            results.append((name, e))
            print(f"FAIL {name}: {e}", flush=True)
            traceback.print_exc()
            try:
                shot("failed-" + name)
            except Exception:  # noqa: BLE001
                pass

    def js(script, *a):
        return driver.execute_script(script, *a)

    def css(sel):
        return driver.find_elements(By.CSS_SELECTOR, sel)

    def go(hash_):
        driver.get(args.url + "/" + hash_)

    def notice_text():
        return " ".join(e.text for e in css("#notice .error"))

    # --- checks ---

    def needs_the_key():
        js("sessionStorage.clear()")
        go("#/runs")
        wait(lambda: "API key" in notice_text(), 20, "the page to ask for the API key")

    def key_and_runs():
        box = driver.find_element(By.ID, "key-input")
        box.clear()
        box.send_keys(args.api_key)
        box.send_keys(Keys.ENTER)
        wait(lambda: css(f'tr[data-run="{args.fixture_run}"]'), 20, "the crafted run in the table")
        assert notice_text() == "", notice_text()
        shot("runs")

    def keyboard():
        go("#/runs")
        driver.refresh()
        wait(lambda: css("#runs-table"), 20, "the runs table")
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys(Keys.TAB)
        first = js("return document.activeElement.textContent")
        assert "Skip" in first, f"first Tab lands on {first!r}"
        for _ in range(2):
            driver.switch_to.active_element.send_keys(Keys.TAB)
        tag = js("return document.activeElement.tagName + ' ' + document.activeElement.textContent")
        assert tag.startswith("A "), f"Tab reaches {tag!r}, not the navigation"

    job = {}

    def start_job_from_the_page():
        go("#/new")
        area = wait(lambda: css("#recipe"), 20, "the recipe box")[0]
        js("arguments[0].value = arguments[1]", area, "name = \n[broken")
        driver.find_element(By.ID, "validate").click()
        wait(lambda: "invalid recipe" in driver.find_element(By.ID, "validation").text, 20, "a validation error")
        js("arguments[0].value = arguments[1]", area, recipe)
        driver.find_element(By.ID, "validate").click()
        wait(lambda: "Valid" in driver.find_element(By.ID, "validation").text, 20, "validation to pass")
        shot("new-job")
        driver.find_element(By.ID, "start").click()
        wait(lambda: "#/run/job-" in driver.current_url, 30, "the page of the new job")
        job["id"] = driver.current_url.split("#/run/")[1]

    def live_curve():
        js("window.__sameDocument = 42")
        # Charts are redrawn as points come: read them in one script call each time.
        points = lambda: js("const c = document.querySelector('.chart[data-metric=\"reward\"]');"
                            " return c ? Number(c.dataset.points) : -1;")
        wait(lambda: points() >= 2, 120, "reward points")
        first = points()
        wait(lambda: points() > first, 120, "the reward curve to gain points")
        assert js("return window.__sameDocument") == 42, "the page reloaded"
        shot("run-curves")

    def cancel_from_the_page():
        # The header is redrawn as the job moves: find and press the button in one step.
        wait(lambda: js("const b = document.querySelector('button[data-action=\"cancel\"]');"
                        " if (b) { b.focus(); b.click(); } return !!b;"), 30, "the cancel button")
        status = lambda: js("const e = document.querySelector('h1 .status'); return e ? e.textContent : '';")
        wait(lambda: status() == "cancelled", 120, "the job to be cancelled")
        shot("run-cancelled")

    def job_samples():
        tab = driver.find_element(By.CSS_SELECTOR, '[data-tab="samples"]')
        tab.click()
        wait(lambda: css("#samples .group"), 30, "the job's sample groups")
        summary = css("#samples .sample summary")[0].text
        assert "format" in summary, f"no reward component in {summary!r}"
        assert "advantage" in summary, summary

    def reasoning_apart_and_markup_as_text():
        go("#/run/" + args.fixture_run)
        wait(lambda: css('[data-tab="samples"]'), 20, "the run page")
        driver.find_element(By.CSS_SELECTOR, '[data-tab="samples"]').click()
        wait(lambda: css("#samples .sample"), 20, "the crafted samples")
        sample = css("#samples .sample")[0]
        sample.find_element(By.TAG_NAME, "summary").click()
        reasoning = sample.find_element(By.CSS_SELECTOR, ".reasoning")
        reasoning.find_element(By.TAG_NAME, "summary").click()
        r_text = reasoning.find_element(By.CSS_SELECTOR, ".text").text
        a_text = sample.find_element(By.CSS_SELECTOR, ".answer .text").text
        assert "secret chain of thought" in r_text, r_text
        assert "secret chain of thought" not in a_text, a_text
        assert "<script>window.pwned = 1</script>" in a_text, a_text
        assert '<img src="x" onerror="window.pwned = 2">' in a_text, a_text
        assert js("return window.pwned") is None, "markup from a completion ran"
        assert not css("#samples script, #samples img"), "markup from a completion became elements"
        shot("samples")
        # The filters: zero-spread groups only, then failures only.
        flat = driver.find_element(By.ID, "only-flat")
        flat.click()
        wait(lambda: all("zero spread" in g.text for g in css("#samples .group")) and css("#samples .group"), 10, "zero-spread groups")
        flat.click()
        driver.find_element(By.ID, "only-failures").click()
        wait(lambda: len(css("#samples .sample")) == 1, 10, "the one failure")

    def overlay():
        go(f"#/run/{args.fixture_run}/{job['id']}")
        # Each run's metrics arrive by their own request: wait for both curves, not the
        # first (asserting right after the first one drawn failed once in CI).
        wait(lambda: len(css('.chart[data-metric="reward"] polyline')) >= 2, 30, "the overlaid curves")
        lines = css('.chart[data-metric="reward"] polyline')
        assert len(lines) == 2, f"{len(lines)} curves"
        assert css(".stage-mark"), "no stage boundary marked"
        shot("overlay")

    def chat_streams():
        go("#/chat")
        box = wait(lambda: css("#chat-input"), 20, "the chat box")[0]
        max_tokens = driver.find_element(By.ID, "chat-max-tokens")
        max_tokens.clear()
        max_tokens.send_keys("24")
        js("""
            window.__updates = 0;
            new MutationObserver((ms) => {
              for (const m of ms) {
                const t = m.target.nodeType === 3 ? m.target.parentElement : m.target;
                if (t && t.closest && t.closest('.msg.assistant')) window.__updates++;
              }
            }).observe(document.getElementById('chat-log'), {subtree: true, childList: true, characterData: true});
        """)
        box.send_keys("say <b>hi</b> to me")
        driver.find_element(By.ID, "chat-send").click()
        wait(lambda: css(".msg.assistant") and not driver.find_element(By.ID, "chat-send").get_attribute("disabled"), 60, "the reply")
        user = css(".msg.user .text")[-1].text
        assert user == "say <b>hi</b> to me", user
        assert not css("#chat-log b"), "the message's markup became an element"
        assert js("return window.__updates") >= 3, f"the reply came in {js('return window.__updates')} updates"
        assert notice_text() == "", notice_text()
        shot("chat")

    def health():
        go("#/health")
        wait(lambda: len(css("#health-cards .card")) >= 6, 20, "the health cards")
        text = driver.find_element(By.ID, "health-cards").text
        assert "requests" in text and "KV cache in use" in text, text
        shot("health")

    def phone_width():
        driver.set_window_size(390, 844)
        go("#/runs")
        wait(lambda: css(f'tr[data-run="{args.fixture_run}"]'), 20, "the runs table")
        width = js("return document.documentElement.scrollWidth")
        assert width <= 400, f"the page is {width} px wide on a 390 px screen"
        shot("runs-phone")
        driver.set_window_size(1280, 900)

    go("")
    for name, f in [
        ("the page asks for the API key", needs_the_key),
        ("with the key the runs are listed", key_and_runs),
        ("keyboard reaches the navigation", keyboard),
        ("a job starts from a pasted recipe", start_job_from_the_page),
        ("the reward curve gains points live", live_curve),
        ("the job is cancelled from the page", cancel_from_the_page),
        ("the job's samples show reward components", job_samples),
        ("reasoning and answer apart, markup as text", reasoning_apart_and_markup_as_text),
        ("two runs overlaid with stage marks", overlay),
        ("chat streams", chat_streams),
        ("health shows the metrics", health),
        ("readable at a phone's width", phone_width),
    ]:
        check(name, f)
    driver.quit()
    failed = sum(1 for _, e in results if e is not None)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
