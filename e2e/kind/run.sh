#!/usr/bin/env bash
# End to end on real Kubernetes: two kind clusters, the hub chart on the first, the spoke
# chart on both, a 2-slice job across them; then cluster B is stopped (its node container,
# API server and all) and the job must still finish, its lost slice moved to cluster A.
#
# Needs: docker, kind, kubectl, helm, curl, and a Python with PyYAML (default: this
# repository's .venv). Run from anywhere:  bash e2e/kind/run.sh
# Not run in this project's CI: its machines have no Docker engine (see README.md).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TAG="${TAG:-e2e}"
A=orrery-a
B=orrery-b
NS=orrery-system
KEEP="${KEEP:-0}"           # KEEP=1: leave the clusters up for a look
PY="${PY:-$ROOT/.venv/bin/python}"   # with PyYAML, for reading the hub's answers

log() { printf '\n== %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
for tool in docker kind kubectl helm curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
[ -x "$PY" ] || die "no Python at $PY (set PY=... to one with PyYAML)"

PF_PID=""
cleanup() {
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  if [ "$KEEP" != 1 ]; then
    kind delete cluster --name "$A" >/dev/null 2>&1 || true
    kind delete cluster --name "$B" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# until SECONDS WHAT COMMAND...: poll COMMAND until it succeeds, or fail after SECONDS.
until_ok() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out after ${limit}s: $what"
    sleep 2
  done
}

log "building images"
docker build -f "$ROOT/hub/Dockerfile" -t "orrery/hub:$TAG" "$ROOT"
docker build -f "$ROOT/spoke-agent/Dockerfile" -t "orrery/spoke-agent:$TAG" "$ROOT"

log "creating clusters $A and $B"
for c in "$A" "$B"; do
  kind get clusters | grep -qx "$c" || kind create cluster --name "$c" --config "$HERE/cluster.yaml" --wait 120s
  kind load docker-image --name "$c" "orrery/hub:$TAG" "orrery/spoke-agent:$TAG"
done

# kind nodes have no GPUs: advertise fake ones (an extended resource on the node's status,
# as Kubernetes' "advertise extended resources" guide does) and the GPU Feature Discovery
# labels. The scheduler counts them; busybox never touches a device.
fake_gpus() {  # CONTEXT NODE COUNT
  kubectl --context "$1" label node "$2" --overwrite \
    nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3 nvidia.com/gpu.memory=81559 \
    topology.kubernetes.io/region="$4"
  kubectl --context "$1" patch node "$2" --subresource=status --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/status/capacity/nvidia.com~1gpu\",\"value\":\"$3\"}]"
}
fake_gpus "kind-$A" "$A-control-plane" 2 eu-west-1
fake_gpus "kind-$B" "$B-control-plane" 1 us-east-1

log "installing the hub on $A"
helm upgrade --install orrery "$ROOT/deploy/helm/orrery-hub" --kube-context "kind-$A" \
  --namespace "$NS" --create-namespace \
  --set image.repository=orrery/hub --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set nats.service.type=NodePort \
  --set lease=10 --set failoverTimeout=20 --set heartbeatInterval=1 --set killGrace=5 \
  --wait --timeout 180s

# Cluster B's agent reaches NATS through A's node (same docker network) and the NodePort.
NATS_PORT=$(kubectl --context "kind-$A" -n "$NS" get svc orrery-orrery-hub-nats \
  -o jsonpath='{.spec.ports[0].nodePort}')
A_NODE_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$A-control-plane")
declare -A NATS_URL=(
  ["$A"]="nats://orrery-orrery-hub-nats.$NS.svc:4222"
  ["$B"]="nats://$A_NODE_IP:$NATS_PORT"
)

for c in "$A" "$B"; do
  log "installing the spoke on $c"
  helm upgrade --install orrery "$ROOT/deploy/helm/orrery-spoke" --kube-context "kind-$c" \
    --namespace "$NS" --create-namespace \
    --set image.repository=orrery/spoke-agent --set image.tag="$TAG" --set image.pullPolicy=Never \
    --set hub.nats="${NATS_URL[$c]}" --set cluster="kube-${c#orrery-}" \
    --set lease=10 --set heartbeatInterval=1 --set killGrace=5 \
    --set slices.pendingTimeoutS=120 \
    --wait --timeout 180s
done

log "another tenant takes one of $A's GPUs"
kubectl --context "kind-$A" apply -f "$HERE/tenant.yaml"
kubectl --context "kind-$A" wait --for=condition=Ready pod/someone-else --timeout=120s

log "reaching the hub's API"
kubectl --context "kind-$A" -n "$NS" port-forward svc/orrery-orrery-hub 18080:8080 >/dev/null 2>&1 &
PF_PID=$!
HUB=http://127.0.0.1:18080
until_ok 60 "the hub's API" curl -fsS "$HUB/healthz"

# Small readers of the hub's REST API (DESIGN.md, "Public contract").
cluster_state() {  # NAME -> Ready / Lost / ...
  curl -fsS "$HUB/v1/clusters" | "$PY" -c '
import json, sys
data = json.load(sys.stdin)
items = data.get("items", data) if isinstance(data, dict) else data
print(next((c["state"] for c in items if c["name"] == sys.argv[1]), "absent"))' "$1"
}
slices() {  # "0:CLUSTER:PHASE 1:CLUSTER:PHASE"
  curl -fsS "$HUB/v1/jobs/$JOB" | "$PY" -c '
import json, sys
j = json.load(sys.stdin)
print(" ".join(f"{s[\"index\"]}:{s.get(\"cluster\")}:{s[\"phase\"]}"
               for s in sorted(j["status"]["slices"], key=lambda s: s["index"])))'
}
phase() { curl -fsS "$HUB/v1/jobs/$JOB" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["status"]["phase"])'; }
is_ready() { [ "$(cluster_state "$1")" = Ready ]; }
is_lost() { [ "$(cluster_state "$1")" = Lost ]; }
on() {  # CLUSTER_OF_SLICE_0 CLUSTER_OF_SLICE_1, both Running
  [ "$(slices)" = "0:$1:Running 1:$2:Running" ]
}
spread() { on kube-a kube-b || on kube-b kube-a; }
ended() { case "$(phase)" in Succeeded|Failed|Cancelled) return 0;; *) return 1;; esac; }

until_ok 120 "kube-a Ready at the hub" is_ready kube-a
until_ok 120 "kube-b Ready at the hub" is_ready kube-b

log "submitting a 2-slice job"
JOB=$("$PY" -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))' "$HERE/job.yaml" \
  | curl -fsS -H 'Content-Type: application/json' --data-binary @- "$HUB/v1/jobs" \
  | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "job $JOB"
until_ok 180 "one slice running on each cluster" spread
slices

log "cluster B stops answering (its node container is stopped)"
docker stop "$B-control-plane"
until_ok 120 "kube-b Lost at the hub" is_lost kube-b

log "the other tenant's pod on $A ends: room for the lost slice"
kubectl --context "kind-$A" delete pod someone-else --wait=true
until_ok 180 "both slices running on kube-a" on kube-a kube-a
slices

log "waiting for the job to finish (the slices sleep 90s)"
until_ok 300 "the job to end" ended
P=$(phase)
[ "$P" = Succeeded ] || die "job ended $P"
kubectl --context "kind-$A" -n "$NS" get jobs -l app.kubernetes.io/managed-by=orrery
log "PASS: the job succeeded after cluster B was lost"
