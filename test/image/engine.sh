# Sourced (POSIX sh: make runs it too) by the image scripts and make image: picks the
# container engine (ENGINE) and its compose command (COMPOSE, used unquoted).
# docker when its daemon answers, else podman (with chroot isolation for builds, which these
# machines need: ../shared/FACTS.md, "Containers here").
if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then
    ENGINE=podman
  else
    echo "no container engine: install Docker, or podman with podman-compose" >&2
    exit 1
  fi
fi
if [ "$ENGINE" = podman ]; then
  export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
  COMPOSE=podman-compose
else
  COMPOSE="docker compose"
fi
