package output

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestEmailPayloadIsTheSignedPayload: Email.Payload is exactly what Payload returns for the
// record and what the signature covers, in both formats.
func TestEmailPayloadIsTheSignedPayload(t *testing.T) {
	for _, readable := range []bool{false, true} {
		cfg := testConfig(readable)
		r := mustRenderer(t, cfg)
		rec := detection()
		e := mustRender(t, r, rec)
		want, err := Payload(rec, cfg.JSONDateKey)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(e.Payload)); diff != "" {
			t.Errorf("readable=%v: Email.Payload (-Payload +Email.Payload):\n%s", readable, diff)
		}
		if got := Sign(e.Payload, []byte(cfg.SecretKey.Reveal())); got != e.Signature {
			t.Errorf("readable=%v: Sign(Email.Payload) = %s, Email.Signature = %s", readable, got, e.Signature)
		}
		if cap(e.Data) != len(e.Data) {
			t.Errorf("readable=%v: appending to Data could overwrite Payload", readable)
		}
	}
}

// TestThreadPutsReferencesFirst: Thread adds In-Reply-To and References in front, and the
// signature still verifies.
func TestThreadPutsReferencesFirst(t *testing.T) {
	cfg := testConfig(false)
	r := mustRenderer(t, cfg)
	e := mustRender(t, r, detection())
	got := Thread(e.Data, "root@example.com")
	p := parseEmail(t, got)
	if diff := cmp.Diff([]string{"<root@example.com>", "<root@example.com>"},
		[]string{p.header.Get("In-Reply-To"), p.header.Get("References")}); diff != "" {
		t.Errorf("threading headers (-want +got):\n%s", diff)
	}
	if err := Verify(bytes.NewReader(got), []byte(cfg.SecretKey.Reveal())); err != nil {
		t.Errorf("threaded email does not verify: %v", err)
	}
	if string(Thread(e.Data, "")) != string(e.Data) {
		t.Error("Thread with no root changed the email")
	}
}
