package output

import (
	"errors"
	"time"

	"github.com/smtpout/smtpout/config"
)

// RecordsHeader is the header of a digest email that says how many records it carries.
const RecordsHeader = "X-Smtpout-Records"

// DigestMember is one record carried by a digest: the JSON payload its own single email would
// carry, byte for byte, and that email's identity. It is all the pipeline keeps (in memory,
// and in ledger_dir) while a group's digest_window runs, so a digest can be rendered after a
// restart from what was kept.
type DigestMember struct {
	// MessageID is the Message-ID of the record's single email, without angle brackets.
	MessageID string
	// Tag and Time are the record's Fluent Bit tag and time.
	Tag  string
	Time time.Time
	// Payload is the record's JSON payload (Email.Payload): one NDJSON line of the digest.
	Payload []byte
}

// GroupValue is one digest_by key, as configured (for example "$host"), and the group's value
// for it, sanitised like a subject.
type GroupValue struct {
	Key   string
	Value string
}

// Digest is one digest email to render: some or all of a group's waiting records.
type Digest struct {
	// Group holds the digest_by keys and the group's values (none: one group per instance).
	Group []GroupValue
	// Members are the records in arrival order; at least one.
	Members []DigestMember
	// ThreadRoot is the Message-ID (without angle brackets) of the group's first email of the
	// day, or "": the digest then carries In-Reply-To and References naming it.
	ThreadRoot string
}

// ErrDigestNotBuilt is returned by RenderDigest until digest rendering is built.
var ErrDigestNotBuilt = errors.New("digest rendering is not built yet")

// RenderDigest renders one signed digest email carrying every member's payload.
func (r *Renderer) RenderDigest(d Digest) (*Email, error) {
	return nil, ErrDigestNotBuilt
}

// GroupValues returns the group of rec under the digest_by templates by: one value per
// template, rendered against rec like a subject (a missing key renders as "").
func (r *Renderer) GroupValues(rec Record, by []config.Template) []GroupValue {
	if len(by) == 0 {
		return nil
	}
	var e encoder
	out := make([]GroupValue, len(by))
	for i, t := range by {
		out[i] = GroupValue{Key: t.Raw, Value: string(appendTemplate(nil, t.Tokens, rec, &e))}
	}
	return out
}

// Thread returns data, a rendered email, with In-Reply-To and References headers naming root
// (a Message-ID without angle brackets) put in front of its headers; root "" returns data as
// it is. The signature covers the payload only, so it stays valid.
func Thread(data []byte, root string) []byte {
	if root == "" {
		return data
	}
	out := make([]byte, 0, len(data)+2*len(root)+32)
	out = append(out, "In-Reply-To: <"...)
	out = append(out, root...)
	out = append(out, ">\r\nReferences: <"...)
	out = append(out, root...)
	out = append(out, ">\r\n"...)
	return append(out, data...)
}
