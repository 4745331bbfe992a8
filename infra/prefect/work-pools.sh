#!/usr/bin/env bash
# Create the Prefect work pools that prefect.yaml deploys to; safe to rerun. Needs PREFECT_API_URL.
#
#   sr-geo      process pool: a worker on a GPU box or on a Ray head node runs flow runs as local
#               processes (`prefect worker start --pool sr-geo`).
#   sr-geo-k8s  Kubernetes pool: each flow run is a Kubernetes Job in the sr-geo image, with the
#               archive volume (PVC sr-geo-data) at /data, talking to the KubeRay cluster through
#               Ray Client (`prefect worker start --pool sr-geo-k8s`, which needs the
#               prefect-kubernetes package in the worker's environment). Its job template is
#               Prefect's default for Kubernetes plus that volume: k8s-base-job-template.json.
#
# Runs at once: each deployment in prefect.yaml has concurrency_limit 1; a limit for a whole pool
# is `prefect work-pool set-concurrency-limit sr-geo N`. Scenes in flight inside one run are a
# setting of the run (SR_GEO_SCENES_IN_FLIGHT; docs/operations.md).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
prefect work-pool create sr-geo --type process --overwrite
prefect work-pool create sr-geo-k8s --type kubernetes --base-job-template "$here/k8s-base-job-template.json" --overwrite
