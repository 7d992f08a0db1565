"""A checker of Kubernetes objects against the Pod Security Standards "restricted" profile (v1.31 rules).

kubernetes-validate checks schemas only, so the profile's controls are written out here, from
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted), plus two
rules of this project: every container sets CPU and memory requests and limits, and no service-account
token is mounted unless the pod is annotated as one that calls the Kubernetes API.

`violations(obj)` takes any rendered object (a dict as `kubectl apply` would get it, camelCase) and returns
one line per violation; objects without a pod template return [].
"""

from __future__ import annotations

from typing import Any

ANNOTATION_CALLS_API = "llmops.io/calls-kubernetes-api"
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_of(obj: dict[str, Any]) -> tuple[dict, dict] | None:
    """(pod metadata, pod spec) of a Pod or of a workload's template; None for other kinds."""
    if obj.get("kind") == "Pod":
        return obj.get("metadata") or {}, obj.get("spec") or {}
    if obj.get("kind") in POD_TEMPLATE_KINDS:
        template = obj["spec"]["template"]
        return template.get("metadata") or {}, template.get("spec") or {}
    if obj.get("kind") == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
        return template.get("metadata") or {}, template.get("spec") or {}
    return None


def _containers(spec: dict) -> list[tuple[str, dict]]:
    out = []
    for field in ("initContainers", "containers", "ephemeralContainers"):
        out += [(f"{field}[{c.get('name')}]", c) for c in spec.get(field) or []]
    return out


def violations(obj: dict[str, Any]) -> list[str]:
    found = pod_of(obj)
    if found is None:
        return []
    metadata, spec = found
    where = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    problems: list[str] = []

    def bad(message: str) -> None:
        problems.append(f"{where}: {message}")

    pod_sc = spec.get("securityContext") or {}
    containers = _containers(spec)
    if not spec.get("containers"):
        bad("no containers")

    # --- baseline ---
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad(f"{field} is true (host namespaces are forbidden)")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        bad("securityContext.windowsOptions.hostProcess is true")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            bad(f"volume {volume.get('name')} is a hostPath")
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            bad(f"volume {volume.get('name')} has type {sorted(kinds - RESTRICTED_VOLUME_TYPES)}, "
                f"restricted allows {sorted(RESTRICTED_VOLUME_TYPES)}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad(f"sysctl {sysctl.get('name')} is not in the safe set")
    for annotation, value in (metadata.get("annotations") or {}).items():
        if annotation.startswith("container.apparmor.security.beta.kubernetes.io/") and value not in (
                "runtime/default", "") and not value.startswith("localhost/"):
            bad(f"AppArmor annotation {annotation}={value}")

    def check_profiles(sc: dict, name: str) -> None:
        if (sc.get("seccompProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            bad(f"{name}.seccompProfile.type is {sc['seccompProfile'].get('type')}")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            bad(f"{name}.appArmorProfile.type is {sc['appArmorProfile'].get('type')}")
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            bad(f"{name}.seLinuxOptions {selinux} is not allowed")
        if sc.get("runAsUser") == 0:
            bad(f"{name}.runAsUser is 0 (root)")

    check_profiles(pod_sc, "pod securityContext")
    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")

    # --- per container: baseline + restricted + this project's resources rule ---
    for name, container in containers:
        sc = container.get("securityContext") or {}
        check_profiles(sc, f"{name}.securityContext")
        if sc.get("privileged"):
            bad(f"{name} is privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad(f"{name} is a Windows hostProcess")
        if sc.get("procMount") not in (None, "Default"):
            bad(f"{name}.securityContext.procMount is {sc.get('procMount')}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                bad(f"{name} uses hostPort {port['hostPort']}")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(f"{name}.securityContext.allowPrivilegeEscalation must be false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            bad(f"{name}.securityContext.capabilities.drop must include ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad(f"{name}.securityContext.capabilities.add may only hold NET_BIND_SERVICE")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            bad(f"{name}: runAsNonRoot must be true (pod or container)")
        if not (pod_seccomp or (sc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")):
            bad(f"{name}: seccompProfile.type must be RuntimeDefault or Localhost (pod or container)")
        if name.startswith("ephemeralContainers"):
            continue
        resources = container.get("resources") or {}
        for part in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(part) or {})
            if missing:
                bad(f"{name}.resources.{part} lacks {sorted(missing)}")

    calls_api = (metadata.get("annotations") or {}).get(ANNOTATION_CALLS_API) == "true"
    if spec.get("automountServiceAccountToken") is not False and not calls_api:
        bad("automountServiceAccountToken must be false (the pod does not call the Kubernetes API; "
            f"annotate {ANNOTATION_CALLS_API}: 'true' where it does)")
    return problems
