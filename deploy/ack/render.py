"""Render the ACK kit: deploy/ack/values.yaml (+ include/config/gpu_profiles.yaml) -> deploy/ack/out/.

    python deploy/ack/render.py [--values FILE] [--gpu-profiles FILE] [--out DIR]

Every template in deploy/ack/templates/ gets ${dotted.keys} of the values file (`$$` is a literal `$`);
a key the values file lacks stops the render naming the template and the key, and so does an image not pinned
by digest (the values file ships with placeholder digests: fill them in from your registry). The node pools
(out/60-node-pools.tf, Terraform for the alicloud provider) are written from the GPU profiles, so the
labels and taints the pools carry (spot pools' too) are the ones the pipelines' pods select and tolerate.
Needs only Python 3 and PyYAML.
"""

from __future__ import annotations

import argparse
import re
import string
import sys
from pathlib import Path

import yaml

KIT = Path(__file__).resolve().parent
ROOT = KIT.parents[1]
# Node labels ACK sets by itself on GPU nodes: a pool must not (and cannot usefully) set them.
ACK_SET_LABELS = {"aliyun.accelerator/nvidia_name"}
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MULTI_AZ_POLICIES = {"PRIORITY", "COST_OPTIMIZED", "BALANCE"}


class KitError(SystemExit):
    def __init__(self, where: str, problem: str, fix: str):
        super().__init__(f"{where}: {problem}; fix: {fix}")


class _Template(string.Template):
    idpattern = r"(?a:[a-z_][a-z0-9_]*(?:\.[A-Za-z0-9_]+)*)"


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list):
            out[name] = yaml.safe_dump(value, default_flow_style=True).strip()
        else:
            out[name] = str(value)
    return out


def render_template(path: Path, values: dict[str, str]) -> str:
    try:
        return _Template(path.read_text()).substitute(values)
    except KeyError as exc:
        raise KitError(str(path), f"uses ${{{exc.args[0]}}}, which values.yaml does not set",
                       f"add {exc.args[0]} to deploy/ack/values.yaml") from None
    except ValueError as exc:
        raise KitError(str(path), str(exc), "write a literal $ as $$") from None


def _hcl(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_image_digests(flat: dict[str, str], values_path: Path) -> None:
    """Every image the kit deploys is pinned by digest (`...@sha256:<64 hex>`, or `image_digest`): a re-pushed tag
    must never change what runs. A placeholder digest stops the render, naming the key."""
    unpinned = []
    for key, value in sorted(flat.items()):
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "image_digest":
            digest = value
        elif leaf == "image" or leaf.endswith("_image"):
            digest = value.rpartition("@")[2] if "@" in value else ""
        else:
            continue
        if not DIGEST_RE.fullmatch(digest):
            unpinned.append(f"{key}={value}")
    if unpinned:
        raise KitError(str(values_path), "images must be pinned by digest, but " + "; ".join(unpinned) + " is not",
                       "push the image, then set IMAGE:TAG@sha256:<digest> (or image_digest: sha256:<digest>) from "
                       "`docker buildx imagetools inspect IMAGE:TAG` or the ACR console")


DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS1035_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def check_names(values: dict, values_path: Path) -> None:
    """Names that become Kubernetes object names: refused here, naming the rule, rather than by the API server."""
    milvus = values.get("milvus") or {}
    checks = [(f"{part}.namespace", (values.get(part) or {}).get("namespace", ""), DNS1123_LABEL_RE, 63,
               "a DNS-1123 label: lowercase letters, digits and '-', at most 63") for part in
              ("airflow", "pipelines", "milvus")]
    # the operator names the proxy Service <name>-milvus: a DNS-1035 label (a letter first), at most 63
    checks.append(("milvus.name", str(milvus.get("name", "")), DNS1035_LABEL_RE, 63 - len("-milvus"),
                   "a DNS-1035 label starting with a letter, at most 56 (the operator adds -milvus)"))
    for key, value, pattern, limit, rule in checks:
        if len(value) > limit or not pattern.fullmatch(value):
            raise KitError(str(values_path), f"{key} {value!r} is not a valid name", f"make it {rule}")


def _multi_az_policy(values: dict, kind: str) -> str:
    policy = (values.get("multi_az_policy") or {}).get(kind, "")
    if policy not in MULTI_AZ_POLICIES:
        raise KitError("deploy/ack/values.yaml", f"multi_az_policy.{kind} is {policy!r}",
                       f"set it to one of {sorted(MULTI_AZ_POLICIES)} (BALANCE for on-demand serving pools)")
    return policy


def _pool_block(values: dict, resource: str, name: str, instance_type: str, sizes: dict, labels: dict,
                taints: list[dict], extra: list[str], *, spot: bool = False) -> str:
    lines = [f'resource "alicloud_cs_kubernetes_node_pool" "{resource}" {{',
             f"  cluster_id     = {_hcl(values['cluster_id'])}",
             f"  node_pool_name = {_hcl(name)}",
             "  vswitch_ids    = [" + ", ".join(_hcl(v) for v in values["vswitch_ids"]) + "]",
             # how scale-out picks among the vSwitches' zones (not their order)
             f"  multi_az_policy = {_hcl(_multi_az_policy(values, 'spot' if spot else 'on_demand'))}",
             f"  instance_types = [{_hcl(instance_type)}]",
             "  system_disk_category = \"cloud_essd\"",
             "  system_disk_size     = 200",
             *extra,
             "  scaling_config {",
             f"    min_size = {int(sizes['min_size'])}",
             f"    max_size = {int(sizes['max_size'])}",
             "  }"]
    for key, value in labels.items():
        lines += ["  labels {", f"    key   = {_hcl(key)}", f"    value = {_hcl(str(value))}", "  }"]
    for taint in taints:
        lines += ["  taints {", f"    key    = {_hcl(taint['key'])}",
                  f"    value  = {_hcl(str(taint.get('value', 'present')))}",
                  f"    effect = {_hcl(taint.get('effect', 'NoSchedule'))}", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


# A spot pool: pay-as-you-go spot instances at the market price (never above the on-demand price), and a
# replacement started when ECS announces a reclaim (about 5 minutes ahead) instead of after it.
SPOT_LINES = ['  instance_charge_type = "PostPaid"', '  spot_strategy        = "SpotAsPriceGo"',
              "  spot_instance_remedy = true"]


def node_pools_tf(values: dict, profiles: list[dict], profiles_path: Path) -> str:
    """One alicloud_cs_kubernetes_node_pool per GPU profile that values.yaml gives an instance type, and a spot
    pool next to it where the profile has `spot` and values.yaml gives the pool a `spot` size."""
    pools = values.get("node_pools") or {}
    known = {p["name"] for p in profiles}
    unknown = sorted(set(pools) - known)
    if unknown:
        raise KitError("deploy/ack/values.yaml", f"node_pools {unknown} name no profile of {profiles_path}",
                       f"use one of {sorted(known)}")
    blocks = ["# Generated by deploy/ack/render.py from values.yaml and gpu_profiles.yaml: edit those, not this.\n"
              "# GPU node pools (alicloud provider). ACK installs the NVIDIA driver and device plugin on GPU\n"
              "# instance types and labels nodes aliyun.accelerator/nvidia_name; pools labelled\n"
              "# ack.node.gpu.schedule=cgpu also need ACK's GPU sharing component (ack-ai-installer) for\n"
              "# aliyun.com/gpu-mem. A *_spot pool runs spot instances: its label and taint (gpu_profiles.yaml\n"
              "# `spot`) keep everything off it but model_refresh's GPU steps and deployments with `spot: true`.\n"]
    for profile in profiles:
        pool = pools.get(profile["name"])
        if pool is None:
            print(f"render: GPU profile {profile['name']!r} has no node pool (not in values.yaml node_pools)",
                  file=sys.stderr)
            continue
        instance_type = pool["instance_type"]
        families = profile.get("instance_families") or []
        if not any(re.match(rf"^{re.escape(f)}[.-]", instance_type) for f in families):
            raise KitError("deploy/ack/values.yaml", f"node_pools.{profile['name']}.instance_type {instance_type} "
                           f"is not of the profile's families {families}",
                           "pick an instance type of one of those families")
        resource = f"gpu_{profile['name'].replace('-', '_')}"
        labels = {k: v for k, v in (profile.get("node_selector") or {}).items() if k not in ACK_SET_LABELS}
        labels["llmops.io/gpu-profile"] = profile["name"]
        taints = profile.get("tolerations") or []
        blocks.append(_pool_block(values, resource, f"llmops-{profile['name']}", instance_type, pool, labels,
                                  taints, []))
        spot, spot_sizes = profile.get("spot"), pool.get("spot")
        if spot_sizes is not None and spot is None:
            raise KitError("deploy/ack/values.yaml", f"node_pools.{profile['name']}.spot is set but GPU profile "
                           f"{profile['name']!r} in {profiles_path} has no `spot`",
                           "add `spot` to the profile (label, taint) or remove node_pools."
                           f"{profile['name']}.spot")
        if spot is None:
            continue
        if spot_sizes is None:
            print(f"render: GPU profile {profile['name']!r} has `spot` but no spot pool (values.yaml "
                  f"node_pools.{profile['name']}.spot): its refresh steps run on on-demand nodes (`prefer`) or "
                  "wait (`require`)", file=sys.stderr)
            continue
        blocks.append(_pool_block(values, f"{resource}_spot", f"llmops-{profile['name']}-spot", instance_type,
                                  spot_sizes, {**labels, **spot["node_label"]}, [*taints, spot["taint"]],
                                  SPOT_LINES, spot=True))
    return "\n".join(blocks)


def render(values_path: Path, profiles_path: Path, out: Path) -> list[Path]:
    values = yaml.safe_load(values_path.read_text())
    flat = flatten(values)
    check_image_digests(flat, values_path)
    check_names(values, values_path)
    placeholders = sorted(k for k, v in flat.items() if "replace" in v)
    if placeholders:
        print(f"render: still placeholders in {values_path}: {', '.join(placeholders)}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for template in sorted((KIT / "templates").glob("*.yaml")):
        target = out / template.name
        target.write_text("# Generated by deploy/ack/render.py from values.yaml: edit that, not this.\n"
                          + render_template(template, flat))
        written.append(target)
    profiles = yaml.safe_load(profiles_path.read_text())["gpu_profiles"]
    target = out / "60-node-pools.tf"
    target.write_text(node_pools_tf(values, profiles, profiles_path))
    written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/ack/render.py", description=__doc__.split("\n")[0])
    parser.add_argument("--values", type=Path, default=KIT / "values.yaml")
    parser.add_argument("--gpu-profiles", type=Path, default=ROOT / "include" / "config" / "gpu_profiles.yaml")
    parser.add_argument("--out", type=Path, default=KIT / "out")
    args = parser.parse_args(argv)
    for path in render(args.values, args.gpu_profiles, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
