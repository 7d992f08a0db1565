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


#: The links every heavy step offers; each appears only when the job's result carries its field.
STEP_LINKS = (ResultLink("Manifest", "manifest_uri"),)
