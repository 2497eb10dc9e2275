#!/usr/bin/env bash
# make image-standins: test support only, never used for a release. No image registry can be
# reached here, so this makes local images under the exact names the Dockerfile and
# docker-compose.yml use, laid out as the real ones are, so those files are tested unchanged:
#   fluent/fluent-bit:<v>     for each v in FLUENT_BIT_VERSIONS, from FLUENT_BIT_DIR/<v>/fluent-bit:
#                             /fluent-bit/bin/fluent-bit and the libraries it needs (plus libc6's,
#                             as distroless/cc has them), /fluent-bit/etc/fluent-bit.conf,
#                             /etc/ssl/certs, no shell; ENTRYPOINT and CMD as the official image
#   golang:1.26-bookworm      Debian bookworm (debootstrap, minbase) with gcc and this machine's
#                             Go 1.26 in /usr/local/go and this machine's CA certificates
#   axllent/mailpit:v1.33.1   mailpit v1.33.1 built from the Go module proxy, ENTRYPOINT /mailpit
# An image already in the store is kept: delete it (podman rmi NAME) to build it again.
set -euo pipefail
cd "$(dirname "$0")/../.."
. test/image/engine.sh

FLUENT_BIT_DIR=${FLUENT_BIT_DIR:-$(cd .. && pwd)/shared/fluent-bit}
FLUENT_BIT_VERSIONS=${FLUENT_BIT_VERSIONS:-"5.1.1 4.2.8"}
GO_IMAGE=golang:1.26-bookworm
MAILPIT_IMAGE=axllent/mailpit:v1.33.1
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

have() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# copy_with_libs ROOT FILE...: copies each FILE and the shared libraries ldd lists for it into
# ROOT at the same paths, symlinks resolved.
copy_with_libs() {
  local root=$1 f lib
  shift
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
    for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*'); do
      mkdir -p "$root$(dirname "$lib")"
      [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
    done
  done
}

fluent_bit_standin() {
  local v=$1 root="$work/fluent-bit-$1" bin="$FLUENT_BIT_DIR/$1/fluent-bit" f
  [ -x "$bin" ] || { echo "image-standins: no Fluent Bit $v at $bin" >&2; exit 1; }
  mkdir -p "$root/fluent-bit/bin" "$root/fluent-bit/etc" "$root/etc/ssl" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp "$bin" "$root/fluent-bit/bin/fluent-bit"
  copy_with_libs "$root" "$bin"
  rm -f "$root$bin"
  # distroless/cc carries all of libc6 (libresolv, libnss_*, ...), libgcc_s, libstdc++ and libssl.
  for f in $(dpkg -L libc6 libgcc-s1 libstdc++6 libssl3 | grep -E '\.so(\.[0-9]+)*$'); do
    [ -e "$f" ] && copy_with_libs "$root" "$f"
  done
  cp -rL /etc/ssl/certs "$root/etc/ssl/certs"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
  # The official image's default configuration: CPU metrics to stdout.
  printf '[SERVICE]\n    Flush     1\n    Log_Level info\n\n[INPUT]\n    Name cpu\n    Tag  cpu.local\n\n[OUTPUT]\n    Name  stdout\n    Match *\n' \
    >"$root/fluent-bit/etc/fluent-bit.conf"
  [ ! -e "$root/bin/sh" ] || { echo "image-standins: a shell slipped into the Fluent Bit stand-in" >&2; exit 1; }
  tar -C "$root" -c . | "$ENGINE" import \
    --change 'EXPOSE 2020' \
    --change 'ENTRYPOINT ["/fluent-bit/bin/fluent-bit"]' \
    --change 'CMD ["/fluent-bit/bin/fluent-bit", "-c", "/fluent-bit/etc/fluent-bit.conf"]' \
    - "fluent/fluent-bit:$v" >/dev/null
}

go_standin() {
  local root="$work/golang" goroot
  goroot=$(go env GOROOT)
  case "$(go env GOVERSION)" in go1.26*) ;; *) echo "image-standins: need Go 1.26 on this machine, have $(go env GOVERSION)" >&2; exit 1 ;; esac
  debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates,git,curl bookworm "$root" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  # Trust what this machine trusts (its network may pass through a TLS proxy with its own CA):
  # the build stage fetches Go modules.
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  cp -a "$goroot" "$root/usr/local/go"
  mkdir -p "$root/go/bin" "$root/go/src"
  tar -C "$root" -c . | "$ENGINE" import \
    --change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV GOPATH=/go' \
    --change 'ENV GOTOOLCHAIN=local' \
    --change 'WORKDIR /go' \
    --change 'CMD ["bash"]' \
    - "$GO_IMAGE" >/dev/null
}

mailpit_standin() {
  local root="$work/mailpit"
  mkdir -p "$root/tmp" "$root/etc/ssl"
  chmod 1777 "$root/tmp"
  # The tests' own mailpit (make mailpit: go install from the module proxy) when it is v1.33.1,
  # with the libraries it links; else a static build (several minutes on a loaded machine).
  if [ -x bin/mailpit ] && go version -m bin/mailpit | grep -Eq 'mod[[:space:]]+github.com/axllent/mailpit[[:space:]]+v1\.33\.1[[:space:]]'; then
    copy_with_libs "$root" "$(readlink -f bin/mailpit)"
    mv "$root$(readlink -f bin/mailpit)" "$root/mailpit"
    rmdir -p "$root$(dirname "$(readlink -f bin/mailpit)")" 2>/dev/null || true
  else
    CGO_ENABLED=0 GOBIN="$root" go install github.com/axllent/mailpit@v1.33.1
  fi
  cp -rL /etc/ssl/certs "$root/etc/ssl/certs"
  tar -C "$root" -c . | "$ENGINE" import \
    --change 'EXPOSE 1025/tcp' --change 'EXPOSE 1110/tcp' --change 'EXPOSE 8025/tcp' \
    --change 'ENTRYPOINT ["/mailpit"]' \
    - "$MAILPIT_IMAGE" >/dev/null
}

for v in $FLUENT_BIT_VERSIONS; do
  if have "fluent/fluent-bit:$v"; then echo "image-standins: fluent/fluent-bit:$v present"; continue; fi
  start=$SECONDS; fluent_bit_standin "$v"
  echo "image-standins: fluent/fluent-bit:$v built ($((SECONDS - start)) s)"
done
if have "$GO_IMAGE"; then echo "image-standins: $GO_IMAGE present"
else start=$SECONDS; go_standin; echo "image-standins: $GO_IMAGE built ($((SECONDS - start)) s)"; fi
if have "$MAILPIT_IMAGE"; then echo "image-standins: $MAILPIT_IMAGE present"
else start=$SECONDS; mailpit_standin; echo "image-standins: $MAILPIT_IMAGE built ($((SECONDS - start)) s)"; fi
