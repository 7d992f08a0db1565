"""The trigger forms in a real browser: Debian's chromium and chromium-driver, driven by selenium, on the running
api-server of tests/airflow/conftest.py. Logs in, opens each DAG's trigger form, checks that Trigger is enabled
with the defaults (the React form disables it when a value it counts as missing fails the schema), triggers
kb_reindex from the form and waits until the real scheduler finishes the run."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SUBMIT = "[data-testid=trigger-dag-submit]"

pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(1800),
    pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                       reason="the browser test needs Debian's chromium and chromium-driver; "
                              "fix: apt-get install -y chromium chromium-driver (.ci/run does)"),
]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser(airflow_stack, rest_runs):  # rest_runs: the scheduler tests' runs start first and run meanwhile
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(airflow_stack.url)
        wait = WebDriverWait(driver, 120)
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(airflow_stack.username)
        driver.find_element(By.NAME, "password").send_keys(airflow_stack.password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: "/auth/login" not in d.current_url)
        yield driver
    finally:
        driver.quit()


def open_trigger_form(browser, airflow_stack, dag_id: str):
    """Open `dag_id`'s page, click Trigger, return the form's submit button once the Params are rendered."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 120)
    browser.get(f"{airflow_stack.url}/dags/{dag_id}")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[aria-label='Trigger Dag']"))).click()
    submit = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, SUBMIT)))
    first_param = next(iter(_params(airflow_stack, dag_id)))
    wait.until(ec.presence_of_element_located((By.ID, f"element_{first_param}")))
    time.sleep(1)  # the form validates its values right after rendering them
    browser.execute_script("arguments[0].scrollIntoView()", submit)
    return submit


def _params(airflow_stack, dag_id: str) -> dict:
    status, body = airflow_stack.api("GET", f"/dags/{dag_id}/details")
    assert status == 200, body
    return body.get("params") or {}


def test_every_trigger_form_is_ready_with_its_defaults(browser, airflow_stack, screenshots):
    _, listing = airflow_stack.api("GET", "/dags?limit=100")
    dag_ids = sorted(dag["dag_id"] for dag in listing["dags"])
    assert {"kb_reindex", "model_refresh", "model_rollout"} <= set(dag_ids)
    print(f"screenshots: {screenshots}")
    disabled = []
    for dag_id in dag_ids:
        submit = open_trigger_form(browser, airflow_stack, dag_id)
        browser.save_screenshot(str(screenshots / f"{dag_id}.png"))
        if not submit.is_enabled():
            disabled.append(dag_id)
    assert not disabled, f"Trigger disabled with the defaults for {disabled}; see the screenshots in {screenshots}"


def test_a_cleared_required_field_disables_trigger(browser, airflow_stack, screenshots):
    """The check above can fail: clearing the model drop-down (a required field) disables Trigger."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    submit = open_trigger_form(browser, airflow_stack, "model_refresh")
    assert submit.is_enabled()
    from selenium.webdriver.common.action_chains import ActionChains

    clear = browser.find_element(By.CSS_SELECTOR, "#element_model button[aria-label='Clear selected options']")
    ActionChains(browser).move_to_element(clear).click().perform()  # react-select clears on a real mouse-down
    try:
        WebDriverWait(browser, 30).until(lambda d: not d.find_element(By.CSS_SELECTOR, SUBMIT).is_enabled())
    finally:
        browser.save_screenshot(str(screenshots / "model_refresh-cleared.png"))


def test_kb_reindex_triggered_from_the_form_succeeds_under_the_scheduler(browser, airflow_stack, screenshots):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def run_ids() -> set[str]:
        _, body = airflow_stack.api("GET", "/dags/kb_reindex/dagRuns?limit=100")
        return {run["dag_run_id"] for run in body["dag_runs"]}

    before = run_ids()
    open_trigger_form(browser, airflow_stack, "kb_reindex").click()
    WebDriverWait(browser, 60).until(lambda _: run_ids() - before)
    (run_id,) = run_ids() - before
    _, run = airflow_stack.api("GET", f"/dags/kb_reindex/dagRuns/{run_id}")
    assert run["run_type"] == "manual" and run["conf"] == {"knowledge_base": "all", "mode": "incremental",
                                                            "dry_run": False}, run
    state = airflow_stack.wait_for_run("kb_reindex", run_id, timeout=900)
    browser.get(f"{airflow_stack.url}/dags/kb_reindex/runs/{run_id}")
    with contextlib.suppress(TimeoutException):  # the screenshot is for people; the state is the assertion
        WebDriverWait(browser, 30).until(lambda d: "tabs." not in d.find_element(By.TAG_NAME, "body").text)
    browser.save_screenshot(str(screenshots / "kb_reindex-run.png"))
    assert state == "success", airflow_stack.run_summary("kb_reindex", run_id)
