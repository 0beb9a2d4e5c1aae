"""Deployment profiles, chosen by the environment variable SKIM_DEPLOYMENT.

- `local` (default): every step in its own process on this machine; model steps (tag skim/resource=gpu) run
  one at a time, everything else two at a time.
- `k8s`: every step is a Kubernetes job (dagster-k8s `k8s_job_executor`); model steps request a GPU through the
  `dagster-k8s/config` op tag. Namespace, image and the secret holding SKIM_TEACHER_API_KEY come from
  SKIM_K8S_NAMESPACE, SKIM_K8S_IMAGE and SKIM_K8S_TEACHER_SECRET; the storage root (SKIM_DATA_ROOT) must be a
  volume every job mounts (SKIM_K8S_DATA_PVC), or object storage mounted the same way.
"""

import os
import shutil
from pathlib import Path

import dagster as dg

DEPLOYMENT_ENV = "SKIM_DEPLOYMENT"
DEPLOYMENTS = ("local", "k8s")
# Model steps carry this op tag: the local executor runs them one at a time (two torch processes on the same
# cores slow each other down many times over); on Kubernetes they are the steps that get a GPU.
GPU_TAGS = {"skim/resource": "gpu"}
LOCAL_MAX_CONCURRENT = 2  # steps in flight on one machine; SKIM_MAX_CONCURRENT overrides it
MAX_CONCURRENT_ENV = "SKIM_MAX_CONCURRENT"
K8S_MAX_CONCURRENT = 16  # steps in flight (CPU steps; GPU steps are bounded by the cluster's GPUs)


INSTANCE_CONFIG = Path(__file__).with_name("dagster.yaml")  # the `gpu` pool's limit across runs


def install_instance_config(dagster_home: str | Path) -> bool:
    """Copy the shipped dagster.yaml into `dagster_home` unless one is there; True when it was copied."""
    target = Path(dagster_home) / "dagster.yaml"
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(INSTANCE_CONFIG, target)
    return True


def deployment() -> str:
    value = os.environ.get(DEPLOYMENT_ENV, "local").strip().lower() or "local"
    if value not in DEPLOYMENTS:
        raise ValueError(f"{DEPLOYMENT_ENV}={value!r}: expected one of {', '.join(DEPLOYMENTS)}")
    return value


def gpu_k8s_config(gpus: int = 1) -> dict:
    """The `dagster-k8s/config` tag of a model step: one NVIDIA GPU, memory for a 135M-8B model, GPU nodes only."""
    return {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": str(gpus), "memory": "48Gi"},
                                           "requests": {"nvidia.com/gpu": str(gpus), "cpu": "4", "memory": "32Gi"}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    }


def gpu_op_tags() -> dict:
    """Op tags of every model step (training, distillation, generation) under the current profile."""
    if deployment() == "k8s":
        return {**GPU_TAGS, "dagster-k8s/config": gpu_k8s_config()}
    return dict(GPU_TAGS)


def local_max_concurrent() -> int:
    """Steps in flight under the local executor. 1 measures every step alone (benchmarks/graph_scaling.py): on 2
    cores a CPU step beside a model step slowed it 10-50x (two torch processes fighting for the same threads)."""
    value = os.environ.get(MAX_CONCURRENT_ENV, "").strip()
    if not value:
        return LOCAL_MAX_CONCURRENT
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{MAX_CONCURRENT_ENV}={value!r}: expected a whole number of steps >= 1")
    return int(value)


def build_executor() -> dg.ExecutorDefinition:
    if deployment() == "k8s":
        from dagster_k8s import k8s_job_executor

        pvc = os.environ.get("SKIM_K8S_DATA_PVC", "skim-data")
        root = os.environ.get("SKIM_DATA_ROOT", "/data")
        config = {
            "job_namespace": os.environ.get("SKIM_K8S_NAMESPACE", "skim"),
            "max_concurrent": K8S_MAX_CONCURRENT,
            "env_vars": [f"SKIM_DATA_ROOT={root}", "SKIM_TEACHER", "SKIM_TEACHER_BASE_URL", "SKIM_TEACHER_MODEL",
                         "HF_HUB_OFFLINE=1"],
            "env_secrets": [os.environ.get("SKIM_K8S_TEACHER_SECRET", "skim-teacher")],  # holds SKIM_TEACHER_API_KEY
            "volumes": [{"name": "skim-data", "persistentVolumeClaim": {"claimName": pvc}}],
            "volume_mounts": [{"name": "skim-data", "mountPath": root}],
            "step_k8s_config": {"container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}}}},
        }
        if os.environ.get("SKIM_K8S_IMAGE"):
            config["job_image"] = os.environ["SKIM_K8S_IMAGE"]
        return k8s_job_executor.configured(config, name="skim_k8s_executor")
    # Each step in its own process, so model memory (and GPU memory) is freed when a step ends. Step processes
    # fork from a server that has imported the code location once: a fresh interpreter per step spends 8-13 s
    # importing torch and transformers (a 3-asset run: 46 s spawned, 14 s forked).
    return dg.multiprocess_executor.configured(
        {"max_concurrent": local_max_concurrent(),
         "tag_concurrency_limits": [{"key": k, "value": v, "limit": 1} for k, v in GPU_TAGS.items()],
         "start_method": {"forkserver": {"preload_modules": ["skim_assets.definitions"]}}},
        name="skim_local_executor",
    )
