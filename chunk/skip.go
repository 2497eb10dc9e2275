package chunk

import "encoding/binary"

// skip returns the offset just past the msgpack object starting at p, checking that it
// is complete and well-formed. It is iterative (no recursion, whatever the nesting) and
// allocates nothing.
func skip(b []byte, p int) (int, error) {
	pending := 1 // objects still to be skipped
	for pending > 0 {
		if p >= len(b) {
			return p, ErrTruncated
		}
		c := b[p]
		p++
		pending--
		var n int // payload bytes to jump over
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c <= 0x8f:
			pending += 2 * int(c&0x0f)
		case c <= 0x9f:
			pending += int(c & 0x0f)
		case c <= 0xbf:
			n = int(c & 0x1f)
		case c == 0xc1:
			return p - 1, ErrMalformed
		default:
			var size int // size of the length field
			switch c {
			case 0xc4, 0xd9:
				size = 1
			case 0xc5, 0xda:
				size = 2
			case 0xc6, 0xdb:
				size = 4
			case 0xc7:
				size, n = 1, 1 // + ext type byte
			case 0xc8:
				size, n = 2, 1
			case 0xc9:
				size, n = 4, 1
			case 0xca:
				n = 4
			case 0xcb:
				n = 8
			case 0xcc, 0xd0:
				n = 1
			case 0xcd, 0xd1:
				n = 2
			case 0xce, 0xd2:
				n = 4
			case 0xcf, 0xd3:
				n = 8
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
				n = 1 + 1<<(c-0xd4)
			case 0xdc, 0xde:
				size = 2
			case 0xdd, 0xdf:
				size = 4
			}
			if size > 0 {
				if len(b)-p < size {
					return p, ErrTruncated
				}
				var l int
				switch size {
				case 1:
					l = int(b[p])
				case 2:
					l = int(binary.BigEndian.Uint16(b[p:]))
				default:
					l = int(binary.BigEndian.Uint32(b[p:]))
				}
				p += size
				switch c {
				case 0xdc, 0xdd:
					pending += l
				case 0xde, 0xdf:
					pending += 2 * l
				default:
					n += l
				}
			}
		}
		if n > len(b)-p {
			return len(b), ErrTruncated
		}
		p += n
		// Each pending object needs at least one byte; this also keeps pending small.
		if pending > len(b)-p {
			return len(b), ErrTruncated
		}
	}
	return p, nil
}
