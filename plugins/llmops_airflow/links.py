"""Links from a task to what it made, shown as buttons on the task instance in the Airflow UI.

    class MyOperator(BaseOperator):
        operator_extra_links = (ResultLink("Report", "report_uri"),)

A `ResultLink` reads one field of the task's return value (its XCom), e.g. the publish step's
`manifest_uri`. Airflow 3 evaluates it when the task finishes and stores the URL under its own XCom
key, so the UI needs no plugin registration; a task whose result lacks the field shows no link.
"""

from __future__ import annotations

from airflow.sdk import BaseOperatorLink


class ResultLink(BaseOperatorLink):
    def __init__(self, name: str, field: str):
        self._name = name
        self.field = field

    @property
    def name(self) -> str:
        return self._name

    @property
    def xcom_key(self) -> str:
        return f"_link_{self.field}"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        state = getattr(ti_key, "state", None)  # at the end of a task, Airflow passes the task instance
        if state is not None and str(getattr(state, "value", state)) != "success":
            return ""  # a failed task has no result to link to
        result = XCom.get_value(ti_key=ti_key, key="return_value")
        value = result.get(self.field) if isinstance(result, dict) else None
        return str(value) if value else ""


#: The task of model_refresh and kb_reindex that writes the run's report (every item's outcome) to its log.
REPORT_TASK = "report"


class RunReportLink(BaseOperatorLink):
    """A button from a step to its run's report: the `report` task's log in the Airflow UI (the URL Airflow itself
    gives a task instance's log, under `[api] base_url`)."""

    @property
    def name(self) -> str:
        return "Run report"

    @property
    def xcom_key(self) -> str:
        return "_link_run_report"

    def get_link(self, operator, *, ti_key) -> str:
        from urllib.parse import quote

        from airflow.sdk.configuration import conf

        base = conf.get("api", "base_url", fallback="http://localhost:8080/").rstrip("/")
        return f"{base}/dags/{quote(ti_key.dag_id)}/runs/{quote(ti_key.run_id)}/tasks/{REPORT_TASK}"


#: The links every heavy step offers: the manifest it published (only when its result carries one) and its
#: run's report (model_refresh and kb_reindex, the DAGs with heavy steps, both end with a `report` task).
STEP_LINKS = (ResultLink("Manifest", "manifest_uri"), RunReportLink())
