package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"time"
)

// The layout of one frame on disk:
//
//	offset 0   kind (1 byte: 'H', 'R', 'D' or 'T')
//	offset 1   length of the body (uint32, little-endian)
//	offset 5   CRC-32C (Castagnoli) of the body (uint32, little-endian)
//	offset 9   CRC-32C of bytes 0..8 and the file's salt (uint32, little-endian)
//	offset 13  body
//
// The second checksum guards the length field on its own, so a reader that lost its place
// (a damaged length field, a header lost in a crash) finds the next frame by testing 13 bytes
// at each offset, not by checksumming a body of unknown length at each one. It covers the
// file's salt, 8 random bytes kept in the head frame at offset 0 (the one frame whose header
// checksum leaves the salt out) and in the lock file: a payload is data from outside, and
// bytes in it built to look like a frame (a Done frame for other records, a record of the
// sender's choosing) cannot pass for one without the salt.
const headerSize = 13

// The kinds of frame.
const (
	// kindHead: the format version, the next Seq to assign and the salt. One starts every
	// file; cut-backs append one, so Seqs stay unique after the records that held the highest
	// are gone.
	kindHead byte = 'H'
	// kindRecord: one waiting Record.
	kindRecord byte = 'R'
	// kindDone: the Seqs of records delivered in a digest.
	kindDone byte = 'D'
	// kindRoot: a group's thread root (a later one for the same group replaces it).
	kindRoot byte = 'T'
)

// version is the format version a head frame records.
const version = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func validKind(k byte) bool {
	return k == kindHead || k == kindRecord || k == kindDone || k == kindRoot
}

// header is a decoded frame header.
type header struct {
	kind    byte
	n       int64 // body length
	bodyCRC uint32
}

// saltSize is the size of a file's salt.
const saltSize = 8

// headerCRC is the header checksum of b[:9] with salt (nil: the head frame at offset 0).
func headerCRC(b, salt []byte) uint32 {
	return crc32.Update(crc32.Checksum(b[:9], castagnoli), castagnoli, salt)
}

// parseHeader decodes b[:headerSize]; ok is false when its checksum (with salt) or kind is
// wrong.
func parseHeader(b, salt []byte) (h header, ok bool) {
	if !validKind(b[0]) || binary.LittleEndian.Uint32(b[9:]) != headerCRC(b, salt) {
		return header{}, false
	}
	return header{kind: b[0], n: int64(binary.LittleEndian.Uint32(b[1:])), bodyCRC: binary.LittleEndian.Uint32(b[5:])}, true
}

// sealFrame fills in the header of b, a frame whose body b[headerSize:] is written.
func sealFrame(b []byte, kind byte, salt []byte) {
	b[0] = kind
	binary.LittleEndian.PutUint32(b[1:], uint32(len(b)-headerSize))
	binary.LittleEndian.PutUint32(b[5:], crc32.Checksum(b[headerSize:], castagnoli))
	sealHeader(b, salt)
}

// sealHeader sets the header checksum of b[:headerSize].
func sealHeader(b, salt []byte) {
	binary.LittleEndian.PutUint32(b[9:], headerCRC(b, salt))
}

// maxBody is the largest body a frame's length field can describe.
const maxBody = 1<<32 - 1

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendRecord appends the body of a record frame.
func appendRecord(b []byte, r *Record) []byte {
	b = binary.LittleEndian.AppendUint64(b, r.Seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(r.Time.Unix()))
	b = binary.LittleEndian.AppendUint32(b, uint32(r.Time.Nanosecond()))
	b = appendString(b, r.Group)
	b = appendString(b, r.MessageID)
	b = appendString(b, r.Tag)
	return append(b, r.Payload...)
}

// recordSize is the size of r's frame.
func recordSize(r *Record) int64 {
	n := headerSize + 20 + int64(len(r.Payload))
	for _, s := range []string{r.Group, r.MessageID, r.Tag} {
		n += int64(uvarintLen(uint64(len(s))) + len(s))
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

var errBody = errors.New("malformed frame body")

// body reads the fields of a frame body in order.
type body struct {
	b   []byte
	err error
}

func (d *body) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.err = errBody
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *body) u32() uint32 {
	if d.err != nil || len(d.b) < 4 {
		d.err = errBody
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *body) str() string {
	if d.err != nil {
		return ""
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(len(d.b)-k) {
		d.err = errBody
		return ""
	}
	s := string(d.b[k : k+int(n)])
	d.b = d.b[k+int(n):]
	return s
}

func decodeRecord(b []byte) (Record, error) {
	d := body{b: b}
	r := Record{Seq: d.u64()}
	sec := int64(d.u64())
	nsec := d.u32()
	r.Group, r.MessageID, r.Tag = d.str(), d.str(), d.str()
	if d.err != nil || nsec >= 1e9 {
		return Record{}, errBody
	}
	r.Time = time.Unix(sec, int64(nsec)).UTC()
	if len(d.b) > 0 {
		r.Payload = append([]byte(nil), d.b...)
	}
	return r, nil
}

func appendRoot(b []byte, r Root) []byte {
	b = appendString(b, r.Group)
	b = appendString(b, r.Day)
	return appendString(b, r.MessageID)
}

func decodeRoot(b []byte) (Root, error) {
	d := body{b: b}
	r := Root{Group: d.str(), Day: d.str(), MessageID: d.str()}
	if d.err != nil || len(d.b) != 0 {
		return Root{}, errBody
	}
	return r, nil
}

func rootSize(r Root) int64 {
	n := int64(headerSize)
	for _, s := range []string{r.Group, r.Day, r.MessageID} {
		n += int64(uvarintLen(uint64(len(s))) + len(s))
	}
	return n
}

func appendDone(b []byte, seqs []uint64) []byte {
	for _, s := range seqs {
		b = binary.LittleEndian.AppendUint64(b, s)
	}
	return b
}

func decodeDone(b []byte) ([]uint64, error) {
	if len(b)%8 != 0 {
		return nil, errBody
	}
	seqs := make([]uint64, len(b)/8)
	for i := range seqs {
		seqs[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return seqs, nil
}

func appendHead(b []byte, next uint64, salt []byte) []byte {
	b = append(b, version)
	b = binary.LittleEndian.AppendUint64(b, next)
	return append(b, salt...)
}

// headSize is the size of a head frame.
const headSize = headerSize + 9 + saltSize

func decodeHead(b []byte) (next uint64, salt []byte, err error) {
	if len(b) != 9+saltSize || b[0] != version {
		return 0, nil, errBody
	}
	return binary.LittleEndian.Uint64(b[1:]), bytes.Clone(b[9:]), nil
}

// window reads a file through a buffer of at most windowSize bytes, so the frames of a file
// cost one read per window, not two per frame. A body larger than the window is read into a
// buffer of its own; both are bounded by the file's size.
type window struct {
	r     io.ReaderAt
	size  int64
	buf   []byte
	start int64
	n     int
	big   []byte
}

const windowSize = 1 << 20

// bytes returns the n bytes at off, valid until the next call; off+n must be <= w.size.
func (w *window) bytes(off int64, n int64) ([]byte, error) {
	if off >= w.start && off+n <= w.start+int64(w.n) {
		return w.buf[off-w.start : off-w.start+n], nil
	}
	if n > windowSize {
		if int64(cap(w.big)) < n {
			w.big = make([]byte, n)
		}
		b := w.big[:n]
		if k, err := w.r.ReadAt(b, off); int64(k) < n {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		return b, nil
	}
	if w.buf == nil {
		w.buf = make([]byte, min(windowSize, w.size))
	}
	want := min(int64(len(w.buf)), w.size-off)
	k, err := w.r.ReadAt(w.buf[:want], off)
	if int64(k) < want {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		w.n = 0
		return nil, err
	}
	w.start, w.n = off, k
	return w.buf[off-w.start : off-w.start+n], nil
}
