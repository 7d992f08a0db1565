"""The step factory's pod operator: a (restricted) KubernetesPodOperator that knows the jobs' exit statuses.

A job exits with `EXIT_PERMANENT` for an error no retry can fix (bad input, policy refusal, checksum
mismatch...) and writes the error to /dev/termination-log. The provider turns every failed pod into
an `AirflowException`, which Airflow retries; here a pod whose base container terminated with
`EXIT_PERMANENT` fails the task at once (`AirflowFailException`) with the termination message.
A pod the cluster took away (a spot reclaim, a node drain or shutdown: the pod's `DisruptionTarget`
condition or an eviction reason) is transient whatever its exit status: the task is retried, and the next
try resumes from the model cache volume. Both the synchronous path and the deferrable re-entry end in
`cleanup`, so one override covers both.
Imported only on runtime `kubernetes` (the provider costs seconds to import).
"""

from __future__ import annotations

from airflow.providers.cncf.kubernetes.utils.container import get_container_termination_message
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from llmops.jobs._cli import EXIT_PERMANENT
from llmops_airflow.links import STEP_LINKS
from llmops_airflow.pod_operator import RestrictedPodOperator


def base_container_exit_code(pod, container_name: str) -> int | None:
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    status = next((s for s in statuses if s.name == container_name), None)
    terminated = status.state.terminated if status is not None and status.state else None
    return terminated.exit_code if terminated is not None else None


#: Pod status reasons of a pod the node took away (kubelet eviction, graceful node shutdown, node lost).
DISRUPTION_REASONS = frozenset({"Evicted", "Terminated", "NodeShutdown", "NodeLost", "Shutdown"})


def disruption(pod) -> str | None:
    """Why the cluster took the pod away (spot reclaim, drain, node shutdown), or None when it did not."""
    status = pod.status if pod is not None else None
    if status is None:
        return None
    for condition in status.conditions or []:
        if condition.type == "DisruptionTarget" and condition.status == "True":
            return f"{condition.reason}: {condition.message or 'no message'}"
    if status.reason in DISRUPTION_REASONS:
        return f"{status.reason}: {status.message or 'no message'}"
    return None


class PodDisrupted(AirflowException):
    """The step's pod was evicted or its node went away: transient, retried."""


class JobPodOperator(RestrictedPodOperator):
    operator_extra_links = STEP_LINKS

    def cleanup(self, pod, remote_pod, xcom_result=None, context=None) -> None:
        try:
            super().cleanup(pod, remote_pod, xcom_result, context)
        except AirflowException as exc:
            if isinstance(exc, AirflowFailException):
                raise
            why = disruption(remote_pod)
            if why is not None:
                raise PodDisrupted(
                    f"pod {getattr(getattr(pod, 'metadata', None), 'name', '?')} was taken away by the cluster "
                    f"({why}): a spot reclaim, drain or node shutdown; retried, the next try resumes from the "
                    "model cache") from None
            if base_container_exit_code(remote_pod, self.base_container_name) == EXIT_PERMANENT:
                message = get_container_termination_message(remote_pod, self.base_container_name) or str(exc)
                raise AirflowFailException(
                    f"pod {getattr(getattr(pod, 'metadata', None), 'name', '?')}: {message} "
                    "(exit status 2: permanent error, not retried)") from None
            raise
