// Package deadletter keeps what could never be delivered: each permanently rejected email is
// written into a directory as "<time>-<message-id>.eml" (the exact signed message) next to
// "<same>.reason.json" (why: codes, reply text, refused recipients); a record that could not
// even be rendered is kept as "<time>-record-<hash>.json" (its JSON) or ".txt" (a description)
// with the same reason file.
//
// The directory is bounded: the bytes of every regular file in it are counted when the Writer
// opens, and a letter that would take the total past the limit is refused with ErrFull. Each
// file is written to a temporary file in the same directory, synced, made 0600 and renamed into
// place, so a reader never sees half a letter. A Writer is safe for concurrent use. The
// package never logs: the caller reports every error.
package deadletter

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Errors returned by Write.
var (
	// ErrFull means the letter would take the directory past its size limit; nothing was written.
	ErrFull = errors.New("dead letter directory is full")
	// ErrExists means a letter of that name is already in the directory (the same record
	// rejected again, e.g. after a restart); nothing was written.
	ErrExists = errors.New("dead letter already written")
)

// Kind says what a letter's body is, and so its file extension.
type Kind int

// The kinds of body.
const (
	// Message is a rendered, signed RFC 5322 email: ".eml".
	Message Kind = iota
	// Record is the JSON of a record that could not become an email: ".json".
	Record
	// Description is a text description of a record that could not be rendered: ".txt".
	Description
)

// Ext returns the body file's extension, with its dot.
func (k Kind) Ext() string {
	switch k {
	case Record:
		return ".json"
	case Description:
		return ".txt"
	}
	return ".eml"
}

// ReasonExt ends the name of every reason file: "<base>.reason.json".
const ReasonExt = ".reason.json"

// Recipient is one recipient the server refused.
type Recipient struct {
	Address      string `json:"address"`
	Code         int    `json:"code"`
	EnhancedCode string `json:"enhanced_code,omitempty"`
	Message      string `json:"message,omitempty"`
}

// Letter is one thing that could not be delivered.
type Letter struct {
	// MessageID is the email's Message-ID without angle brackets; "" for a record that could
	// not be rendered.
	MessageID string
	// Tag and Time are the record's Fluent Bit tag and timestamp.
	Tag  string
	Time time.Time
	// Code and EnhancedCode are the SMTP reply that rejected the email (0 and "" when none).
	Code         int
	EnhancedCode string
	// Reason is the error text.
	Reason string
	// Rejected lists the recipients the server refused.
	Rejected []Recipient
	// Kind says what Body is.
	Kind Kind
	// Body is written as is: the signed message, the record's JSON or a description.
	Body []byte
}

// Reason is the content of a ".reason.json" file.
type Reason struct {
	MessageID string `json:"message_id,omitempty"`
	Tag       string `json:"tag"`
	// Time is the record's timestamp (RFC 3339, UTC, nanoseconds).
	Time string `json:"time"`
	// WrittenAt is when the letter was written (RFC 3339, UTC).
	WrittenAt    string      `json:"written_at"`
	Code         int         `json:"code"`
	EnhancedCode string      `json:"enhanced_code"`
	Reason       string      `json:"reason"`
	Rejected     []Recipient `json:"rejected_recipients"`
	// File is the name of the body file this reason belongs to.
	File string `json:"file"`
	// Size is the body file's size in bytes.
	Size int `json:"size"`
}

// Written says where a letter went.
type Written struct {
	// Path and ReasonPath are the body and reason files.
	Path, ReasonPath string
	// Bytes is what both files added to the directory.
	Bytes int64
}

// Writer writes letters into one directory, within a size limit.
type Writer struct {
	dir string
	max int64
	now func() time.Time

	mu       sync.Mutex
	used     int64
	inflight int64           // bytes reserved by writes in progress
	writing  map[string]bool // base names being written right now
	scanned  time.Time       // when used was last counted from the directory
}

// RescanEvery is how often, at most, a full Writer counts the directory again, so that
// letters an operator moved away free their space without a restart.
const RescanEvery = 30 * time.Second

// Open returns a Writer for dir (which must exist) keeping at most maxSize bytes there. It
// counts the regular files already in dir (not in its subdirectories) against the limit.
func Open(dir string, maxSize int64) (*Writer, error) {
	if dir == "" {
		return nil, errors.New("deadletter: no directory")
	}
	if maxSize <= 0 {
		return nil, fmt.Errorf("deadletter: size limit %d is not positive", maxSize)
	}
	used, err := usage(dir)
	if err != nil {
		return nil, fmt.Errorf("deadletter: %w", err)
	}
	w := &Writer{dir: dir, max: maxSize, now: time.Now, used: used, writing: make(map[string]bool)}
	w.scanned = w.now()
	return w, nil
}

// usage sums the sizes of the regular files directly in dir.
func usage(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	return n, nil
}

// Dir returns the directory letters are written to.
func (w *Writer) Dir() string { return w.dir }

// Max returns the size limit in bytes.
func (w *Writer) Max() int64 { return w.max }

// Used returns the bytes counted in the directory: those found at Open plus those written since.
func (w *Writer) Used() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.used
}

// timeLayout names files so that they sort by record time.
const timeLayout = "20060102T150405.000000000Z"

// maxIDLen bounds the Message-ID part of a file name (names are limited to 255 bytes).
const maxIDLen = 160

// BaseName returns the file name, without extension, of l's files:
// "<record time>-<Message-ID>" or "<record time>-record-<hash of tag, time and body>".
// The same letter always gets the same name.
func BaseName(l Letter) string {
	id := l.MessageID
	if id == "" {
		h := sha256.New()
		h.Write([]byte(l.Tag))
		h.Write([]byte{0})
		h.Write(strconv.AppendInt(nil, l.Time.UnixNano(), 10))
		h.Write([]byte{0})
		h.Write(l.Body)
		id = "record-" + hex.EncodeToString(h.Sum(nil)[:16])
	} else {
		id = safeName(id)
	}
	return l.Time.UTC().Format(timeLayout) + "-" + id
}

// safeName keeps letters, digits and "@._-+", replaces anything else with "_", and shortens
// long names with a hash of the whole so that distinct IDs keep distinct names.
func safeName(id string) string {
	b := make([]byte, 0, len(id))
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '@', c == '.', c == '_', c == '-', c == '+':
			b = append(b, c)
		default:
			b = append(b, '_')
		}
	}
	if len(b) > 0 && b[0] == '.' {
		b[0] = '_'
	}
	if len(b) > maxIDLen {
		sum := sha256.Sum256([]byte(id))
		b = append(b[:maxIDLen-17], '-')
		b = hex.AppendEncode(b, sum[:8])
	}
	return string(b)
}

// Write writes l's body and reason files. It returns ErrFull (nothing written) when they
// would take the directory past its limit, ErrExists when the letter is already there, and
// otherwise any error of the file system, naming the file.
func (w *Writer) Write(l Letter) (Written, error) {
	base := BaseName(l)
	bodyName := base + l.Kind.Ext()
	reason := Reason{
		MessageID:    l.MessageID,
		Tag:          l.Tag,
		Time:         l.Time.UTC().Format(time.RFC3339Nano),
		WrittenAt:    w.now().UTC().Format(time.RFC3339),
		Code:         l.Code,
		EnhancedCode: l.EnhancedCode,
		Reason:       l.Reason,
		Rejected:     l.Rejected,
		File:         bodyName,
		Size:         len(l.Body),
	}
	if reason.Rejected == nil {
		reason.Rejected = []Recipient{}
	}
	rj, err := json.MarshalIndent(reason, "", "  ")
	if err != nil {
		return Written{}, fmt.Errorf("deadletter: encode reason: %w", err)
	}
	rj = append(rj, '\n')
	out := Written{
		Path:       filepath.Join(w.dir, bodyName),
		ReasonPath: filepath.Join(w.dir, base+ReasonExt),
		Bytes:      int64(len(l.Body) + len(rj)),
	}

	// Reserve the name and the bytes.
	w.mu.Lock()
	if w.writing[base] {
		w.mu.Unlock()
		return out, ErrExists
	}
	if _, err := os.Lstat(out.Path); err == nil {
		w.mu.Unlock()
		return out, ErrExists
	}
	if w.used+out.Bytes > w.max && !w.rescan(out.Bytes) {
		w.mu.Unlock()
		return out, ErrFull
	}
	w.used += out.Bytes
	w.inflight += out.Bytes
	w.writing[base] = true
	w.mu.Unlock()

	err = w.writeFiles(out, l.Body, rj)

	w.mu.Lock()
	delete(w.writing, base)
	w.inflight -= out.Bytes
	if err != nil {
		w.used -= out.Bytes
	}
	w.mu.Unlock()
	if err != nil {
		return out, fmt.Errorf("deadletter: %w", err)
	}
	return out, nil
}

// rescan counts the directory again when RescanEvery has passed since the last count and
// reports whether there is now room for need more bytes. Bytes of writes in progress stay reserved (their temporary
// files may be counted too: the error is on the safe side). Called with w.mu held.
func (w *Writer) rescan(need int64) bool {
	now := w.now()
	if now.Sub(w.scanned) < RescanEvery {
		return false
	}
	w.scanned = now
	used, err := usage(w.dir)
	if err != nil {
		return false
	}
	w.used = used + w.inflight
	return w.used+need <= w.max
}

// writeFiles writes both files to temporary names, then renames the body and then the reason
// into place. On failure nothing of the letter stays behind.
func (w *Writer) writeFiles(out Written, body, reason []byte) error {
	tmpBody, err := w.temp(body)
	if err != nil {
		return err
	}
	tmpReason, err := w.temp(reason)
	if err != nil {
		_ = os.Remove(tmpBody)
		return err
	}
	if err := os.Rename(tmpBody, out.Path); err != nil {
		_ = os.Remove(tmpBody)
		_ = os.Remove(tmpReason)
		return err
	}
	if err := os.Rename(tmpReason, out.ReasonPath); err != nil {
		_ = os.Remove(out.Path)
		_ = os.Remove(tmpReason)
		return err
	}
	syncDir(w.dir)
	return nil
}

// temp writes data to a new 0600 temporary file in the directory, synced and closed, and
// returns its path.
func (w *Writer) temp(data []byte) (string, error) {
	f, err := os.CreateTemp(w.dir, ".tmp-deadletter-*")
	if err != nil {
		return "", err
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		_ = f.Close()
		_ = os.Remove(name)
		return "", err
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(name)
		return "", err
	}
	return name, nil
}

// syncDir makes the renames durable where the file system allows it.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
