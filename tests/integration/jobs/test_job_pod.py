"""The step factory's pod operator reads the job's exit status: EXIT_PERMANENT fails the task at once.

Against kmock's Kubernetes emulator over real HTTP. The emulator has no kubelet, so the test plays it:
it writes the finished pod's status (base container terminated with the job's exit code and termination
message) and hands that pod to the operator's real `cleanup`, where both the synchronous and the
deferrable paths of KubernetesPodOperator end.
"""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import models as k8s

from llmops.jobs._cli import EXIT_PERMANENT, EXIT_TRANSIENT
from llmops_airflow.pod import JobPodOperator
from llmops_airflow.steps import heavy_step


def _finished_pod(op, exit_code: int, message: str) -> k8s.V1Pod:
    pod = op.build_pod_request_obj(context=None)
    pod.metadata.namespace = "llmops"
    state = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code, message=message))
    pod.status = k8s.V1PodStatus(phase="Failed", container_statuses=[k8s.V1ContainerStatus(
        name="base", state=state, ready=False, restart_count=0, image=pod.spec.containers[0].image, image_id="")])
    op.hook.core_v1_client.create_namespaced_pod("llmops", op.hook.core_v1_client.api_client
                                                 .sanitize_for_serialization(pod))
    return pod


@pytest.mark.parametrize(("exit_code", "expected"), [(EXIT_PERMANENT, AirflowFailException),
                                                     (EXIT_TRANSIENT, AirflowException), (1, AirflowException)])
def test_a_pod_that_exits_permanent_fails_the_task_without_retries(kube, exit_code, expected):
    op = heavy_step(task_id="download", job="download", runtime="kubernetes")
    assert isinstance(op, JobPodOperator)
    pod = _finished_pod(op, exit_code, "permanent error, not retried: has no model named 'x'")
    with pytest.raises(AirflowException) as raised:
        op.cleanup(pod, pod)
    assert type(raised.value) is expected
    if expected is AirflowFailException:
        assert "has no model named 'x'" in str(raised.value) and "not retried" in str(raised.value)


@pytest.mark.parametrize(("exit_code", "reason", "condition"), [
    # ACK reclaims a spot instance: graceful node shutdown terminates the pod (kubelet's DisruptionTarget)
    (143, "Terminated", ("TerminationByKubelet", "Pod was terminated in response to imminent node shutdown.")),
    # a drain before the reclaim (the pool's spot_instance_remedy) evicts it through the Eviction API
    (137, None, ("EvictionByEvictionAPI", "Eviction API: evicting")),
    # the kubelet evicted it; even an exit status that reads permanent is the interruption's, not the job's
    (EXIT_PERMANENT, "Evicted", None)])
def test_a_pod_the_cluster_took_away_is_retried(kube, exit_code, reason, condition):
    from llmops_airflow.pod import PodDisrupted

    op = heavy_step(task_id="quantize", job="quantize", gpu_profile="a10", runtime="kubernetes")
    pod = _finished_pod(op, exit_code, "")
    pod.status.reason = reason
    if condition:
        pod.status.conditions = [k8s.V1PodCondition(type="DisruptionTarget", status="True", reason=condition[0],
                                                    message=condition[1])]
    with pytest.raises(AirflowException) as raised:
        op.cleanup(pod, pod)
    assert type(raised.value) is PodDisrupted
    assert (condition or (reason,))[0] in str(raised.value) and "retried" in str(raised.value)
