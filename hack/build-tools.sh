#!/usr/bin/env bash
# Builds the real parts of the test world from their Go modules, once per version:
#   kube-apiserver, kube-controller-manager, kubectl (hack/k8s), etcd (hack/etcd), helm (hack/helm)
# into $ECR_OPERATOR_CACHE/bin/<name>-<version>/<name>. A warm cache makes this a no-op.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${ECR_OPERATOR_CACHE:-$HOME/.cache/ecr-operator}"

# name version module-dir package
TOOLS=(
  "kube-apiserver v1.37.2 k8s k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager v1.37.2 k8s k8s.io/kubernetes/cmd/kube-controller-manager"
  "kubectl v1.37.2 k8s k8s.io/kubernetes/cmd/kubectl"
  "etcd v3.6.16 etcd go.etcd.io/etcd/server/v3"
  "helm v3.21.4 helm helm.sh/helm/v3/cmd/helm"
)

wanted=("$@")
for entry in "${TOOLS[@]}"; do
  read -r name version module package <<<"$entry"
  if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $name "* ]]; then
    continue
  fi
  out="$CACHE/bin/$name-$version/$name"
  if [[ -x "$out" ]]; then
    echo "build-tools: $name $version cached at $out"
    continue
  fi
  echo "build-tools: building $name $version from $package (first time only; kube-* take several minutes)..."
  start=$(date +%s)
  mkdir -p "$(dirname "$out")"
  ldflags=""
  if [[ "$module" == k8s ]]; then
    # Stamp the release so kubectl/helm/clients see v1.37.2, not v0.0.0-master.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=${version:1:1}"
      ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$version") -X $pkg.gitTreeState=clean"
    done
  fi
  # A temporary name of this process's own: two builds running at once (a test session and `make tools`)
  # must not move each other's half-written binary into place.
  (cd "$HACK_DIR/$module" && go build -ldflags="$ldflags" -o "$out.tmp.$$" "$package")
  mv -f "$out.tmp.$$" "$out"
  echo "build-tools: built $name in $(($(date +%s) - start))s"
done
