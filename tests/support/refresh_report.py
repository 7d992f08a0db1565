"""Reading model_refresh's report (llmops.refresh.report.render_report) back out of an `airflow dags test` log.

The report task logs its report line by line through the `llmops_airflow.refresh` logger (the UI's log view
shows it whole); `airflow dags test` prints each line as `<time> [info     ] <line> [llmops_airflow.refresh] loc=...`.
Each item's row may wrap onto indented continuation lines, which `rows` joins again."""

from __future__ import annotations

import re

LOGGED = re.compile(r"^\S+Z \[\w+\s*\] (?P<line>.*?)\s+\[llmops_airflow\.refresh\] loc=\S+$")


def report_from_log(log: str, header: str) -> str:
    """The last report in `log` whose first line starts with `header` (e.g. "model_refresh: 0 published")."""
    found: list[str] | None = None
    current: list[str] | None = None
    for raw in log.splitlines():
        match = LOGGED.match(raw)
        line = match["line"] if match else None
        if line is not None and line.startswith(header):
            current = [line]
            found = current
        elif current is not None and line is not None:
            current.append(line)
        else:
            current = None
    if found is None:
        raise AssertionError(f"no report starting with {header!r} in the log:\n{log[-3000:]}")
    return "\n".join(found)


def rows(report: str) -> dict[str, tuple[str, str]]:
    """item key -> (status, detail with its wrapped lines joined), for the rows before "plan:"."""
    out: dict[str, tuple[str, str]] = {}
    key = None
    for line in report.splitlines()[1:]:
        if line.startswith("plan:"):
            break
        words = line.split()
        if line.startswith("  ") and not line.startswith("   ") and len(words) >= 2:
            key = words[1]
            out[key] = (words[0], " ".join(words[2:]))
        elif key is not None:
            status, detail = out[key]
            out[key] = (status, f"{detail} {' '.join(words)}".strip())
    return out
