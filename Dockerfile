# smtpout: Fluent Bit with the smtp output plugin bundled.
#
#   docker build -t smtpout .
#   docker run -v $PWD/fluent-bit.conf:/fluent-bit/etc/fluent-bit.conf:ro smtpout
#
# Build on Debian bookworm (glibc 2.36), never on musl: the runtime image is Debian 12 based.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=1 go build -buildmode=c-shared -trimpath -ldflags="-s -w" -o /out/smtpout.so .

# The official image is distroless: no shell, no RUN here. Its ENTRYPOINT is fluent-bit.
FROM fluent/fluent-bit:4.2.8
COPY --from=build /out/smtpout.so /fluent-bit/plugins/smtpout.so
COPY fluent-bit.conf.example /fluent-bit/etc/smtpout/fluent-bit.conf.example
COPY demo/ /fluent-bit/etc/smtpout/
# Set both, so the image does not depend on how the base image sets them.
ENTRYPOINT ["/fluent-bit/bin/fluent-bit"]
CMD ["-e", "/fluent-bit/plugins/smtpout.so", "-c", "/fluent-bit/etc/fluent-bit.conf"]
