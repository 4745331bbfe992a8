"""The deployment files hold together: schemas, one image everywhere, and entrypoints that exist and
parse (prefect.yaml is also deployed to a real server in tests/flows/test_serve.py)."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shlex
from pathlib import Path

import click
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"


def _yaml(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


def _images() -> set[str]:
    cluster, job = _yaml("infra/k8s/raycluster.yaml")["spec"], _yaml("infra/k8s/rayjob.yaml")["spec"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    k8s_pool = next(d for d in _yaml("prefect.yaml")["deployments"] if d["work_pool"]["name"] == "sr-geo-k8s")
    return {
        _yaml("infra/ray/cluster.yaml")["docker"]["image"],
        k8s_pool["work_pool"]["job_variables"]["image"],
        *(c["image"] for pod in pods for c in pod["template"]["spec"]["containers"]),
        *(c["image"] for g in job["rayClusterSpec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]),
    }


def _check_sr_geo_command(command: str) -> None:
    """`python -m workers.job SUBCOMMAND ...`: the module exists and the subcommand accepts the arguments."""
    from flows.cli import main

    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "workers.job"], command
    assert importlib.util.find_spec("workers.job") is not None
    subcommand = main.get_command(click.Context(main), argv[3])
    assert subcommand is not None, f"no sr-geo subcommand {argv[3]!r}"
    subcommand.make_context(argv[3], argv[4:])  # raises on an unknown option or a bad value


def test_ray_cluster_launcher_config_matches_rays_schema():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = _yaml("infra/ray/cluster.yaml")
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert "--gpus all" in config["docker"]["worker_run_options"]
    lines = (INFRA / "ray" / "cluster.yaml").read_text().splitlines()
    job_line = next(line for line in lines if "ray job submit" in line)
    _check_sr_geo_command(job_line.split(" -- ", 1)[1].replace("SRC", "in").replace("DEST", "out"))


def test_kuberay_manifests_have_a_gpu_group_and_a_runnable_entrypoint():
    cluster = _yaml("infra/k8s/raycluster.yaml")
    job = _yaml("infra/k8s/rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"], job["apiVersion"], job["kind"]) == (
        "ray.io/v1", "RayCluster", "ray.io/v1", "RayJob")
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]
    import ray

    assert cluster["spec"]["rayVersion"] == ray.__version__
    gpu = [g for g in cluster["spec"]["workerGroupSpecs"]
           if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])]
    assert gpu and gpu[0]["minReplicas"] >= 1
    claims = {v["persistentVolumeClaim"]["claimName"] for pod in [cluster["spec"]["headGroupSpec"], *gpu]
              for v in pod["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {_yaml("infra/k8s/storage.yaml")["metadata"]["name"]}
    _check_sr_geo_command(job["spec"]["entrypoint"])
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert all(name.startswith("SR_GEO_") for name in env)


def test_one_image_everywhere_built_from_the_dockerfile():
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    images = _images()
    assert len(images) == 1
    tag = images.pop()
    assert tag in dockerfile  # the build command documented in the Dockerfile makes this tag
    cuda = re.search(r"nvidia/cuda:(\d+)\.(\d+)", dockerfile)
    assert cuda, "the image must build on a CUDA base"
    variant = f"cu{cuda.group(1)}{cuda.group(2)}"  # e.g. 12.8 -> cu128: torch's index and the image tag
    assert f"/{variant}" in dockerfile and tag.endswith(variant)
    assert dockerfile.index("pip install torch==") < dockerfile.index("pip install -c constraints.txt .")
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


def test_prefect_deployments_point_at_flows_with_their_parameters():
    from prefect import Flow

    declared = _yaml("prefect.yaml")["deployments"]
    script = (INFRA / "prefect" / "work-pools.sh").read_text()
    for deployment in declared:
        module, name = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module), name)
        assert isinstance(flow, Flow)
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
        assert f"work-pool create {deployment['work_pool']['name']} " in script
        for schedule in deployment.get("schedules", []):
            assert len(schedule["cron"].split()) == 5
    template = json.loads((INFRA / "prefect" / "k8s-base-job-template.json").read_text())
    mounts = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert mounts == [{"name": "archive", "mountPath": "/data"}]


def test_work_pool_script_is_executable():
    assert os.access(INFRA / "prefect" / "work-pools.sh", os.X_OK)
