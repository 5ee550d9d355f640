#!/usr/bin/env bash
# Validates the deployment files offline (CI runs it from .ci/run):
#
#   1. deploy/k8s renders with `kubectl kustomize`: the full stack (deploy/k8s),
#      the agents alone (base) and the agents with autoscaling (overlays/own-broker);
#   2. every rendered Kubernetes object passes `kubernetes-validate --strict` (no
#      unknown or misspelt field) for the oldest and newest Kubernetes versions
#      below; the custom resources (RabbitmqCluster, ScaledObject,
#      TriggerAuthentication) pass `check-jsonschema` against the CRD schemas
#      vendored in deploy/k8s/schemas (made strict by extract.py there);
#   3. the RabbitMQ component's definitions.json is deploy/rabbitmq/definitions.json;
#   4. deploy/compose.yaml passes the Compose specification's schema (deploy/schemas);
#   5. hadolint passes deploy/Dockerfile (rules ignored, with reasons, in .hadolint.yaml).
#
# The tools are pinned in deploy/check-manifests.requirements.txt and installed
# once into a venv under ROBEING_TOOLS_CACHE (default ~/.cache/robeing), keyed by
# that file's hash; after that nothing is downloaded. Exit 0 when all pass, 1
# listing every failure, 2 when the check cannot run (no kubectl, no venv).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSIONS=(1.30.0 1.37.0)
VARIANTS=(deploy/k8s deploy/k8s/base deploy/k8s/overlays/own-broker)
REQS=deploy/check-manifests.requirements.txt
SCHEMAS=deploy/k8s/schemas
KUBECTL=${KUBECTL:-kubectl}

die() { echo "check-manifests: $*" >&2; exit 2; }
failures=()
fail() { failures+=("$1"); echo "FAIL: $1" >&2; }

command -v "$KUBECTL" >/dev/null || die "kubectl not found (Debian: apt-get install kubectl); it renders deploy/k8s"

cache=${ROBEING_TOOLS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/robeing}
venv="$cache/manifest-tools-$(sha256sum "$REQS" | cut -c1-16)"
if [ ! -x "$venv/bin/hadolint" ]; then
    echo "installing the pinned tools into $venv"
    rm -rf "$cache"/manifest-tools-*  # older pins' venvs, half-made ones too
    mkdir -p "$cache"
    python3 -m venv "$venv" || die "cannot make a venv at $venv"
    "$venv/bin/python" -m pip install -q -r "$REQS" >"$cache/manifest-tools.log" 2>&1 || {
        rm -rf "$venv"
        die "cannot install $REQS (PyPI unreachable?); see $cache/manifest-tools.log"
    }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- kustomize"
for dir in "${VARIANTS[@]}"; do
    name=${dir//\//_}
    if "$KUBECTL" kustomize "$dir" >"$work/$name.yaml" 2>"$work/$name.err"; then
        echo "rendered $dir ($(grep -c '^kind:' "$work/$name.yaml") objects)"
    else
        fail "kubectl kustomize $dir: $(tr '\n' ' ' <"$work/$name.err")"
        rm -f "$work/$name.yaml"
    fi
done

# Sort the rendered objects: those of a kind with a vendored CRD schema go to
# crd/<schema>/, one file each; everything else to builtin/, for kubernetes-validate
# (which refuses a kind it has no schema for: a new custom kind needs its schema here).
mkdir -p "$work/builtin" "$work/crd"
"$venv/bin/python" - "$work" "$SCHEMAS" <<'PY'
import sys
from pathlib import Path

import yaml

work, schemas = Path(sys.argv[1]), Path(sys.argv[2])
for rendered in sorted(work.glob("*.yaml")):
    builtin = []
    for i, doc in enumerate(d for d in yaml.safe_load_all(rendered.read_text()) if d):
        group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
        schema = schemas / f"{str(doc.get('kind', '')).lower()}-{group}-{version}.json"
        if group and schema.is_file():
            out = work / "crd" / schema.stem / f"{rendered.stem}-{i}.yaml"
            out.parent.mkdir(exist_ok=True)
            out.write_text(yaml.safe_dump(doc, sort_keys=False))
        else:
            builtin.append(doc)
    (work / "builtin" / rendered.name).write_text(yaml.safe_dump_all(builtin, sort_keys=False))
PY

echo "-- kubernetes-validate --strict (Kubernetes ${KUBE_VERSIONS[*]})"
shopt -s nullglob
builtin=("$work"/builtin/*.yaml)
validated=${#failures[@]}
for version in "${KUBE_VERSIONS[@]}"; do
    [ ${#builtin[@]} -gt 0 ] || break  # nothing rendered: already a failure above
    if ! out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${builtin[@]}" 2>&1); then
        fail "kubernetes-validate (Kubernetes $version): $out"
    fi
done
[ ${#failures[@]} -gt "$validated" ] || echo "ok"

echo "-- custom resources against $SCHEMAS"
for dir in "$work"/crd/*/; do
    schema="$SCHEMAS/$(basename "$dir").json"
    if out=$("$venv/bin/check-jsonschema" --schemafile "$schema" "$dir"*.yaml 2>&1); then
        echo "$(basename "$dir"): $(find "$dir" -name '*.yaml' | wc -l) objects ok"
    else
        fail "$(basename "$dir"): $out"
    fi
done
# The full stack must keep both components (a dropped one validates fine).
if [ -e "$work/deploy_k8s.yaml" ]; then
    for kind in rabbitmqcluster scaledobject; do
        found=("$work"/crd/"$kind"-*/deploy_k8s-*.yaml)
        [ ${#found[@]} -gt 0 ] || fail "deploy/k8s renders no $kind: was its component dropped?"
    done
fi

echo "-- the RabbitMQ component's definitions"
if cmp -s deploy/rabbitmq/definitions.json deploy/k8s/components/rabbitmq/definitions.json; then
    echo "ok"
else
    fail "deploy/k8s/components/rabbitmq/definitions.json differs from deploy/rabbitmq/definitions.json: copy it again"
fi

echo "-- compose.yaml against the Compose specification"
if out=$("$venv/bin/check-jsonschema" --schemafile deploy/schemas/compose-spec.json deploy/compose.yaml 2>&1); then
    echo "ok"
else
    fail "deploy/compose.yaml: $out"
fi

echo "-- hadolint deploy/Dockerfile"
if out=$("$venv/bin/hadolint" --no-color --config .hadolint.yaml deploy/Dockerfile 2>&1); then
    echo "ok"
else
    fail "hadolint: $out"
fi

if [ ${#failures[@]} -gt 0 ]; then
    echo "check-manifests: ${#failures[@]} check(s) failed:" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "check-manifests: all deployment files are valid"
