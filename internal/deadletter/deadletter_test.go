package deadletter

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)

func letter(id string, body string) Letter {
	return Letter{
		MessageID: id, Tag: "app.auth", Time: t0, Code: 550, EnhancedCode: "5.1.1",
		Reason:   "smtp RCPT soc@example.com: 550 5.1.1 no such user",
		Rejected: []Recipient{{Address: "soc@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"}},
		Kind:     Message, Body: []byte(body),
	}
}

// files returns the names of the files in dir, sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func openWriter(t *testing.T, dir string, max int64) *Writer {
	t.Helper()
	w, err := Open(dir, max)
	if err != nil {
		t.Fatalf("Open(%q, %d): %v", dir, max, err)
	}
	w.now = func() time.Time { return time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC) }
	return w
}

func TestWriteMessage(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 1<<20)
	body := "From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n"
	got, err := w.Write(letter("0123456789abcdef0123456789abcdef@example.com", body))
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	base := "20261127T100000.123456789Z-0123456789abcdef0123456789abcdef@example.com"
	want := Written{
		Path:       filepath.Join(dir, base+".eml"),
		ReasonPath: filepath.Join(dir, base+".reason.json"),
	}
	got.Bytes, want.Bytes = 0, 0
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Write() (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{base + ".eml", base + ".reason.json"}, files(t, dir)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	data, err := os.ReadFile(want.Path)
	if err != nil || string(data) != body {
		t.Errorf("body file = %q, %v; want %q", data, err, body)
	}
	var r Reason
	raw, err := os.ReadFile(want.ReasonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("reason file is not JSON: %v\n%s", err, raw)
	}
	wantReason := Reason{
		MessageID: "0123456789abcdef0123456789abcdef@example.com", Tag: "app.auth",
		Time: "2026-11-27T10:00:00.123456789Z", WrittenAt: "2026-11-27T11:00:00Z",
		Code: 550, EnhancedCode: "5.1.1", Reason: "smtp RCPT soc@example.com: 550 5.1.1 no such user",
		Rejected: []Recipient{{Address: "soc@example.com", Code: 550, EnhancedCode: "5.1.1", Message: "no such user"}},
		File:     base + ".eml", Size: len(body),
	}
	if diff := cmp.Diff(wantReason, r); diff != "" {
		t.Errorf("reason (-want +got):\n%s", diff)
	}
	// The JSON keys are the documented ones.
	for _, k := range []string{`"message_id"`, `"tag"`, `"time"`, `"code"`, `"enhanced_code"`, `"reason"`, `"rejected_recipients"`} {
		if !strings.Contains(string(raw), k) {
			t.Errorf("reason file lacks key %s:\n%s", k, raw)
		}
	}
	for _, p := range []string{want.Path, want.ReasonPath} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(p), perm)
		}
	}
	if u := w.Used(); u != int64(len(body)+len(raw)) {
		t.Errorf("Used() = %d, want %d", u, len(body)+len(raw))
	}

	// The same letter again (a restart re-sending the chunk): not written twice.
	if _, err := w.Write(letter("0123456789abcdef0123456789abcdef@example.com", body)); !errors.Is(err, ErrExists) {
		t.Errorf("second Write: %v, want ErrExists", err)
	}
	if n := len(files(t, dir)); n != 2 {
		t.Errorf("%d files after a repeated letter, want 2", n)
	}
}

func TestWriteUnrenderable(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 1<<20)
	for _, tc := range []struct {
		kind Kind
		ext  string
	}{{Record, ".json"}, {Description, ".txt"}} {
		l := Letter{Tag: "app", Time: t0, Reason: "record nests deeper than the depth limit", Kind: tc.kind,
			Body: []byte("record " + tc.ext)}
		got, err := w.Write(l)
		if err != nil {
			t.Fatalf("Write: %v", err)
		}
		name := filepath.Base(got.Path)
		if !strings.HasPrefix(name, "20261127T100000.123456789Z-record-") || !strings.HasSuffix(name, tc.ext) {
			t.Errorf("body file %q: want <time>-record-<hash>%s", name, tc.ext)
		}
		if got.ReasonPath != strings.TrimSuffix(got.Path, tc.ext)+ReasonExt {
			t.Errorf("reason file %q does not match body file %q", got.ReasonPath, got.Path)
		}
		var r Reason
		raw, _ := os.ReadFile(got.ReasonPath)
		if err := json.Unmarshal(raw, &r); err != nil || r.MessageID != "" || r.File != name || r.Rejected == nil {
			t.Errorf("reason %+v (%v): want no message_id, file %q, an empty recipient list", r, err, name)
		}
	}
	if n := len(files(t, dir)); n != 4 {
		t.Errorf("%d files, want 4", n)
	}
}

func TestBaseName(t *testing.T) {
	long := strings.Repeat("a", 32) + "@" + strings.Repeat("sub.", 60) + "example.com"
	tests := []struct {
		name string
		id   string
		want string
	}{
		{"plain", "abc@example.com", "20261127T100000.123456789Z-abc@example.com"},
		{"unsafe characters", "../a/b\x00c d@x", "20261127T100000.123456789Z-_._a_b_c_d@x"},
		{"leading dot", ".hidden@x", "20261127T100000.123456789Z-_hidden@x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := BaseName(Letter{MessageID: tc.id, Time: t0}); got != tc.want {
				t.Errorf("BaseName(%q) = %q, want %q", tc.id, got, tc.want)
			}
		})
	}
	a := BaseName(Letter{MessageID: long, Time: t0})
	b := BaseName(Letter{MessageID: long + "x", Time: t0})
	if len(a) > 200 || a == b || strings.ContainsAny(a, "/\x00") {
		t.Errorf("long IDs: %q (%d bytes) and %q: want short, distinct, safe names", a, len(a), b)
	}
	r1 := BaseName(Letter{Tag: "t", Time: t0, Body: []byte("1")})
	r2 := BaseName(Letter{Tag: "t", Time: t0, Body: []byte("2")})
	if r1 == r2 || r1 != BaseName(Letter{Tag: "t", Time: t0, Body: []byte("1")}) {
		t.Errorf("record names %q, %q: want distinct per body and stable", r1, r2)
	}
}

func TestSizeBound(t *testing.T) {
	dir := t.TempDir()
	// 1000 bytes already there count against the limit.
	if err := os.WriteFile(filepath.Join(dir, "old.eml"), make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 500)
	w := openWriter(t, dir, 1000+2*(500+700))
	if u := w.Used(); u != 1000 {
		t.Fatalf("Used() after Open = %d, want 1000 (the existing file)", u)
	}
	var written, full int
	for i := range 10 {
		_, err := w.Write(letter(fmt.Sprintf("%032d@example.com", i), body))
		switch {
		case err == nil:
			written++
		case errors.Is(err, ErrFull):
			full++
		default:
			t.Fatalf("Write %d: %v", i, err)
		}
	}
	if written == 0 || full == 0 || written+full != 10 {
		t.Fatalf("written %d, full %d: want some written and the rest refused as full", written, full)
	}
	total := int64(0)
	for _, n := range files(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().IsRegular() {
			total += fi.Size()
		}
	}
	if total > w.Max() {
		t.Errorf("directory holds %d bytes, over the %d limit", total, w.Max())
	}
	if total != w.Used() {
		t.Errorf("directory holds %d bytes, Used() = %d", total, w.Used())
	}
	if n := len(files(t, dir)); n != 2+2*written {
		t.Errorf("%d entries, want %d (old file, sub dir, 2 per letter)", n, 2+2*written)
	}

	// A new Writer counts what is there now, and stays full.
	w2 := openWriter(t, dir, w.Max())
	if w2.Used() != total {
		t.Errorf("reopened Used() = %d, want %d", w2.Used(), total)
	}
	if _, err := w2.Write(letter("new@example.com", body)); !errors.Is(err, ErrFull) {
		t.Errorf("Write after reopening a full directory: %v, want ErrFull", err)
	}

	// The operator moves the old file away: within RescanEvery nothing changes, after it the
	// space is found again without a restart.
	if err := os.Remove(filepath.Join(dir, "old.eml")); err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)
	w2.now = func() time.Time { return clock }
	w2.scanned = clock
	clock = clock.Add(RescanEvery / 2)
	if _, err := w2.Write(letter("new@example.com", body)); !errors.Is(err, ErrFull) {
		t.Errorf("Write before RescanEvery: %v, want ErrFull", err)
	}
	clock = clock.Add(RescanEvery)
	if _, err := w2.Write(letter("new@example.com", body)); err != nil {
		t.Errorf("Write after the space was freed and RescanEvery passed: %v", err)
	}
}

func TestConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	const n = 64
	body := strings.Repeat("y", 300)
	w := openWriter(t, dir, 1<<30)
	var wg sync.WaitGroup
	errs := make([]error, n*2)
	for i := range n * 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Two goroutines per letter: one of each pair finds it written or being written.
			_, errs[i] = w.Write(letter(fmt.Sprintf("%032d@example.com", i/2), body))
		}()
	}
	wg.Wait()
	var ok, exists int
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrExists):
			exists++
		default:
			t.Errorf("Write %d: %v", i, err)
		}
	}
	if ok != n || exists != n {
		t.Errorf("%d written, %d already there; want %d and %d", ok, exists, n, n)
	}
	names := files(t, dir)
	if len(names) != 2*n {
		t.Errorf("%d files, want %d", len(names), 2*n)
	}
	var total int64
	for _, name := range names {
		if strings.HasPrefix(name, ".tmp") {
			t.Errorf("temporary file left behind: %s", name)
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		total += int64(len(data))
		if strings.HasSuffix(name, ".eml") && string(data) != body {
			t.Errorf("%s has %d bytes, want the %d-byte body", name, len(data), len(body))
		}
	}
	if total != w.Used() {
		t.Errorf("files hold %d bytes, Used() = %d", total, w.Used())
	}
}

func TestUnwritableDirectory(t *testing.T) {
	dir := t.TempDir()
	w := openWriter(t, dir, 1<<20)
	// Replace the directory by a file: creating anything in it fails, even for root.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	_, err := w.Write(letter("a@example.com", "body"))
	if err == nil || errors.Is(err, ErrFull) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Write into a file: %v, want an error naming %s", err, dir)
	}
	if w.Used() != 0 {
		t.Errorf("Used() = %d after a failed write, want 0", w.Used())
	}
	if _, err := Open(dir, 1<<20); err == nil {
		t.Errorf("Open on a file succeeded")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), 1<<20); err == nil {
		t.Errorf("Open on a missing directory succeeded")
	}
	if _, err := Open(t.TempDir(), 0); err == nil {
		t.Errorf("Open with a zero limit succeeded")
	}
}

func BenchmarkWrite(b *testing.B) {
	dir := b.TempDir()
	w, err := Open(dir, 1<<40)
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(strings.Repeat("z", 2048))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	i := 0
	for b.Loop() {
		l := letter(fmt.Sprintf("%032d@example.com", i), "")
		l.Body = body
		if _, err := w.Write(l); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
