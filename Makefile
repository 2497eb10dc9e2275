# smtpout: a Fluent Bit output plugin that delivers every record as one signed email.

GO       ?= go
GOFLAGS  ?=
MAILPIT_VERSION ?= v1.33.1
BIN      := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

.PHONY: all test test-fluentbit unit lint mailpit bench bench-fluentbit fuzz soak soak-restarts demo image image-standins image-test clean docs-screenshots helm helm-test

all: smtpout.so smtpout

SOURCES := $(shell find . \( -name '*.go' -o -name '*.h' \) -not -path './test/*' -not -name '*_test.go') go.mod go.sum

# The plugin Fluent Bit loads with -e.
smtpout.so: $(SOURCES)
	CGO_ENABLED=1 $(GO) build -buildmode=c-shared -trimpath -ldflags="-s -w" -o $@ .

# The operators' tool: check, probe, send, verify.
smtpout: $(SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags="-s -w" -o $@ ./cmd/smtpout

# mailpit is the real SMTP server the tests start; installed into ./bin when missing.
mailpit: $(BIN)/mailpit
$(BIN)/mailpit:
	@if command -v mailpit >/dev/null 2>&1; then mkdir -p $(BIN) && ln -sf "$$(command -v mailpit)" $@; \
	else GOBIN=$(BIN) $(GO) install github.com/axllent/mailpit@$(MAILPIT_VERSION); fi

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Every test, race detector on; the mailpit-backed and browser tests fail rather than skip, and
# the browser screenshots are kept in bin/screenshots.
test: mailpit
	SMTPOUT_REQUIRE_MAILPIT=1 SMTPOUT_REQUIRE_BROWSER=1 SMTPOUT_SCREENSHOTS=$(BIN)/screenshots \
	  MAILPIT=$(BIN)/mailpit $(GO) test -race -count=1 $(GOFLAGS) ./...

# Every end-to-end test that needs a real Fluent Bit (they are named TestFluentBit... and skip
# without FLUENT_BIT), once against each binary in FLUENT_BIT_DIR: 4.2.8 and 5.1.1 are kept
# in ../shared/fluent-bit. The full log of each run is left in bin/fluentbit-VERSION.log.
FLUENT_BIT_DIR      ?= $(abspath $(CURDIR)/../shared/fluent-bit)
FLUENT_BIT_VERSIONS ?= 4.2.8 5.1.1
test-fluentbit: mailpit
	@for v in $(FLUENT_BIT_VERSIONS); do \
	  fb="$(FLUENT_BIT_DIR)/$$v/fluent-bit"; log="$(BIN)/fluentbit-$$v.log"; \
	  if [ ! -x "$$fb" ]; then echo "test-fluentbit: no Fluent Bit $$v at $$fb"; exit 1; fi; \
	  echo "=== end-to-end tests through real Fluent Bit $$v ($$fb)"; \
	  FLUENT_BIT="$$fb" SMTPOUT_REQUIRE_MAILPIT=1 MAILPIT=$(BIN)/mailpit \
	    $(GO) test -race -count=1 -timeout 20m -run FluentBit -v $(GOFLAGS) ./... >"$$log" 2>&1; rc=$$?; \
	  grep -E '^(--- (PASS|FAIL|SKIP)|ok |FAIL|panic:)' "$$log" | grep -v 'no tests to run'; \
	  echo "Fluent Bit $$v: $$(grep -c -- '^--- PASS' "$$log") passed, $$(grep -c -- '^--- FAIL' "$$log") failed, $$(grep -c -- '^--- SKIP' "$$log") skipped"; \
	  if [ $$rc -ne 0 ]; then echo "--- tail of $$log:"; tail -n 150 "$$log"; exit $$rc; fi; \
	done

# Helm v4 for make helm-test: the one on PATH or in GOBIN, else built from the Go module proxy
# into GOBIN (a few minutes, once).
HELM_VERSION ?= v4.3.2
HELM_GOBIN   := $(or $(shell $(GO) env GOBIN),$(shell $(GO) env GOPATH)/bin)
HELM         ?= $(or $(shell command -v helm 2>/dev/null),$(HELM_GOBIN)/helm)
HELM_CHARTS  ?= $(abspath $(CURDIR)/../shared/helm-charts)
helm:
	@[ -x "$(HELM)" ] || GOBIN=$(HELM_GOBIN) $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)

# The official charts (HELM_CHARTS, read only) rendered with deploy/helm's values and then run
# (test/helm_test.go): the rendered agent and aggregators started with each Fluent Bit of
# HELM_TEST_VERSIONS in FLUENT_BIT_DIR and the built plugin, a container log line delivered as
# a signed email. The charts run 5.1.1; 4.2.8 also runs the rendered files, but crashed
# (SIGSEGV in free() at a hot reload or at SIGTERM) in 4 of 10 runs, without the plugin too
# (test/reload-crash-http: Fluent Bit 4.2.8's bug), so it is left out by default:
# HELM_TEST_VERSIONS="4.2.8 5.1.1" runs both.
HELM_TEST_VERSIONS ?= 5.1.1
helm-test: helm
	@for v in $(HELM_TEST_VERSIONS); do \
	  fb="$(FLUENT_BIT_DIR)/$$v/fluent-bit"; \
	  if [ ! -x "$$fb" ]; then echo "helm-test: no Fluent Bit $$v at $$fb"; exit 1; fi; \
	  echo "=== the rendered charts through real Fluent Bit $$v"; \
	  HELM="$(HELM)" HELM_CHARTS="$(HELM_CHARTS)" FLUENT_BIT="$$fb" \
	    $(GO) test -race -count=1 -timeout 10m -run '^TestHelm' -v $(GOFLAGS) ./test || exit 1; \
	done

unit:
	CGO_ENABLED=0 $(GO) test -count=1 ./config/... ./output/... ./mailer/... ./chunk/... ./fbconf/... ./cmd/... ./internal/...

# Micro-benchmarks, then the engine (go run ./test/bench): defaults (100,000 emails of a 2 KB
# record, machine format, implicit TLS, 4 connections, 2 workers, peak RSS also read at 10,000),
# then at a simulated 10 ms RTT with PIPELINING+CHUNKING, PIPELINING only, and neither; then
# ledger_dir off and on compared (no RTT and 10 ms), the journal against bbolt (storecmp, its
# own module: bbolt is not a dependency of the plugin), and the real host (bench-fluentbit).
BENCHTIME ?= 1s
bench: smtpout.so
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./output ./chunk ./mailer ./internal/pipeline ./test/bench
	$(GO) run ./test/bench -so ./smtpout.so
	$(GO) run ./test/bench -so ./smtpout.so -rtt 10ms -records 4000
	$(GO) run ./test/bench -so ./smtpout.so -rtt 10ms -records 2000 -chunking off
	$(GO) run ./test/bench -so ./smtpout.so -rtt 10ms -records 2000 -pipelining off
	$(GO) run ./test/bench -so ./smtpout.so -records 20000 -ledger both -baseline off
	$(GO) run ./test/bench -so ./smtpout.so -rtt 10ms -records 4000 -ledger both -baseline off
	cd test/bench/storecmp && $(GO) run . -emails 20000 -flush 100
	@$(MAKE) --no-print-directory bench-fluentbit

# The real host: each Fluent Bit in FLUENT_BIT_DIR/<version>/fluent-bit (see test-fluentbit)
# tails BENCH_FB_RECORDS 2 KB JSON lines into smtpout.so (defaults, Workers 2, implicit TLS)
# against servers that store before they reply (Postfix's smtp-sink behind a TLS terminator,
# extracted from Debian's postfix package into bin/postfix; mailpit; a go-smtp server that
# fsyncs each message) and the in-process sink (the best case), also with pipeline_depth
# BENCH_FB_DEPTHS where the server offers CHUNKING; then a null output and go-mail with
# connection reuse against each server; BENCH_FB_REPEAT interleaved rounds, medians (about
# 5 minutes per version under a load average of 5-15).
BENCH_FB_RECORDS    ?= 10000
BENCH_FB_REPEAT     ?= 3
BENCH_FB_DEPTHS     ?= 1,16
bench-fluentbit: smtpout.so mailpit
	@if [ ! -d "$(FLUENT_BIT_DIR)" ]; then \
		echo "bench-fluentbit: SKIPPED: $(FLUENT_BIT_DIR) does not exist (set FLUENT_BIT_DIR to a directory holding <version>/fluent-bit)"; \
		exit 0; fi; \
	for v in $(FLUENT_BIT_VERSIONS); do \
		fb="$(FLUENT_BIT_DIR)/$$v/fluent-bit"; \
		if [ ! -x "$$fb" ]; then echo "bench-fluentbit: SKIPPED Fluent Bit $$v: $$fb not found"; continue; fi; \
		$(GO) run ./test/bench -so ./smtpout.so -fluent-bit "$$fb" -records $(BENCH_FB_RECORDS) -repeat $(BENCH_FB_REPEAT) \
		  -pipeline-depths $(BENCH_FB_DEPTHS) -postfix-cache $(BIN)/postfix -mailpit $(BIN)/mailpit || exit 1; \
	done

# Each fuzz target for a bounded time (FUZZTIME each); the seed corpora also run in make test.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./chunk -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./output -run '^$$' -fuzz '^FuzzRender$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./output -run '^$$' -fuzz '^FuzzReadableHTML$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./output -run '^$$' -fuzz '^FuzzDigestHTML$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./config -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s
	$(GO) test ./internal/spool -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s

# 20,000 records with faults in 5% of transactions, reported (not part of make test).
soak:
	SMTPOUT_SOAK=1 $(GO) test -count=1 -run '^TestSoak$$' -timeout 10m -v ./test

# 20 cycles of Fluent Bit killed with SIGKILL mid-chunk and restarted, filesystem storage and
# ledger_dir, through a real Fluent Bit (not part of make test): prints lost= and duplicates=.
soak-restarts: smtpout.so mailpit
	@test -n "$(FLUENT_BIT)" || { echo "soak-restarts: set FLUENT_BIT=/path/to/fluent-bit"; exit 2; }
	SMTPOUT_SOAK_RESTARTS=1 FLUENT_BIT=$(FLUENT_BIT) MAILPIT=$(BIN)/mailpit $(GO) test -count=1 -run '^TestSoakRestarts$$' -timeout 15m -v ./test

# The README's screenshots of the readable email (docs/readable-*.png) and of a digest on a
# phone (docs/digest-phone.png), taken by the browser tests (TestReadableInBrowser,
# TestDigestInBrowser) with headless Chromium (Debian package chromium).
docs-screenshots:
	mkdir -p docs
	SMTPOUT_REQUIRE_BROWSER=1 SMTPOUT_DOCS_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run '^TestReadableInBrowser$$/^detection$$' ./output
	SMTPOUT_REQUIRE_BROWSER=1 SMTPOUT_DOCS_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run '^TestDigestInBrowser$$/^phone$$' ./output

clean:
	rm -f smtpout.so smtpout.h smtpout
	rm -rf $(BIN)

demo:
	./demo/run.sh

# Container images (issue 20), with docker when its daemon answers, else podman:
# smtpout:<v> (the official fluent/fluent-bit:<v> plus smtpout.so) for each v in
# IMAGE_FLUENT_BIT_VERSIONS, and smtpout-plugin (FROM scratch: /smtpout.so, /LICENSE).
# image-standins makes local stand-ins for the base images (test support, never for a release);
# image-test builds everything and runs the compose demo and a read-only, non-root run.
# IMAGE_BUILD_FLAGS go to every build (e.g. --network host where only the host reaches the
# Go module proxy).
IMAGE_FLUENT_BIT_VERSIONS ?= 5.1.1 4.2.8
IMAGE_BUILD_FLAGS ?=
image:
	@. test/image/engine.sh; set -e; \
	for v in $(IMAGE_FLUENT_BIT_VERSIONS); do \
	  $$ENGINE build $(IMAGE_BUILD_FLAGS) --build-arg FLUENT_BIT_VERSION=$$v -t smtpout:$$v .; done; \
	$$ENGINE build $(IMAGE_BUILD_FLAGS) --target plugin -t smtpout-plugin .
image-standins:
	FLUENT_BIT_DIR=$(FLUENT_BIT_DIR) FLUENT_BIT_VERSIONS="$(IMAGE_FLUENT_BIT_VERSIONS)" ./test/image/standins.sh
image-test:
	FLUENT_BIT_DIR=$(FLUENT_BIT_DIR) FLUENT_BIT_VERSIONS="$(IMAGE_FLUENT_BIT_VERSIONS)" ./test/image/image-test.sh
