# smtpout: Fluent Bit with the smtp output plugin bundled, and the plugin alone.
#
#   docker build -t smtpout:5.1.1 .                                     # official Fluent Bit 5.1.1 + smtpout.so
#   docker build --build-arg FLUENT_BIT_VERSION=4.2.8 -t smtpout:4.2.8 .
#   docker build --target plugin -t smtpout-plugin .                    # FROM scratch: /smtpout.so, /LICENSE
#   docker run -v $PWD/fluent-bit.conf:/fluent-bit/etc/fluent-bit.conf:ro smtpout:5.1.1
#
# FLUENT_BIT_VERSION chooses the runtime: 5.1.1 (what the official Helm chart ships) or a 4.2.x.
ARG FLUENT_BIT_VERSION=5.1.1

# Build on Debian bookworm (glibc 2.36), never on musl: the official image is distroless
# Debian (glibc 2.36 on the 4.2.0 line, 2.41 from 4.2.1 on), and a .so built against a newer
# glibc than the runtime's does not load.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -buildmode=c-shared -trimpath -ldflags="-s -w" -o /out/smtpout.so .

# The plugin alone, for Kubernetes: mount it as an image volume at /fluent-bit/plugins (giving
# /fluent-bit/plugins/smtpout.so) or copy it out in an init container, and keep the official image.
FROM scratch AS plugin
COPY --from=build /out/smtpout.so /smtpout.so
COPY LICENSE /LICENSE

# The official image is distroless: no shell, so no RUN here. Its ENTRYPOINT is fluent-bit.
FROM fluent/fluent-bit:${FLUENT_BIT_VERSION}
COPY --from=build /out/smtpout.so /fluent-bit/plugins/smtpout.so
COPY LICENSE /fluent-bit/plugins/smtpout.LICENSE
COPY fluent-bit.conf.example /fluent-bit/etc/smtpout/fluent-bit.conf.example
COPY demo/ /fluent-bit/etc/smtpout/
# Set both, so the image does not depend on how the base image sets them.
ENTRYPOINT ["/fluent-bit/bin/fluent-bit"]
CMD ["-e", "/fluent-bit/plugins/smtpout.so", "-c", "/fluent-bit/etc/fluent-bit.conf"]
