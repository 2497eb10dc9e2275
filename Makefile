# smtpout: a Fluent Bit output plugin that delivers every record as one signed email.

GO       ?= go
GOFLAGS  ?=
MAILPIT_VERSION ?= v1.33.1
BIN      := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

.PHONY: all test unit lint mailpit bench fuzz soak demo docker clean

all: smtpout.so

smtpout.so: $(shell find . -name '*.go' -not -path './test/*') go.mod go.sum
	CGO_ENABLED=1 $(GO) build -buildmode=c-shared -trimpath -ldflags="-s -w" -o $@ .

# mailpit is the real SMTP server the tests start; installed into ./bin when missing.
mailpit: $(BIN)/mailpit
$(BIN)/mailpit:
	@if command -v mailpit >/dev/null 2>&1; then mkdir -p $(BIN) && ln -sf "$$(command -v mailpit)" $@; \
	else GOBIN=$(BIN) $(GO) install github.com/axllent/mailpit@$(MAILPIT_VERSION); fi

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every test, race detector on; mailpit-backed tests fail rather than skip when SMTPOUT_REQUIRE_MAILPIT=1.
test: mailpit
	SMTPOUT_REQUIRE_MAILPIT=1 MAILPIT=$(BIN)/mailpit $(GO) test -race -count=1 $(GOFLAGS) ./...

unit:
	CGO_ENABLED=0 $(GO) test -count=1 ./config/... ./output/... ./mailer/... ./chunk/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -f smtpout.so smtpout.h
	rm -rf $(BIN)

demo:
	./demo/run.sh

docker:
	docker build -t smtpout .
