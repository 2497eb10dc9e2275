package output

import "encoding/binary"

// qpMaxLine is the longest encoded line before the soft-break "=" (76 with it, RFC 2045).
const qpMaxLine = 75

// qpSafe marks the bytes quoted-printable writes as themselves: printable ASCII but "=".
var qpSafe = func() (t [256]bool) {
	for c := ' '; c <= '~'; c++ {
		t[c] = c != '='
	}
	return t
}()

// printable8 reports whether the 8 bytes packed in x are all printable ASCII (space to "~")
// but "=".
func printable8(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	low := (x - ones*0x20) &^ x        // a high bit set where a byte is below 0x20 (or above 0x7f)
	high := (x + ones*(0x7f-0x7e)) | x // a high bit set where a byte is above 0x7e
	eq := x ^ (ones * '=')
	isEq := (eq - ones) &^ eq // a high bit set where a byte is "="
	return (low|high|isEq)&highs == 0
}

// appendQP appends src quoted-printable encoded. In text mode a LF in src is a hard line break
// (written as CRLF); otherwise every byte, CR and LF included, round-trips exactly. The output
// always ends with a soft line break ("=" CRLF), so it ends in CRLF (SMTP adds nothing) while
// the decoded content ends exactly where src ends, without a newline.
func appendQP(dst, src []byte, text bool) []byte {
	lineLen := 0
	for i := 0; i < len(src); {
		c := src[i]
		if text && c == '\n' {
			dst = append(dst, '\r', '\n')
			lineLen = 0
			i++
			continue
		}
		if lineLen == qpMaxLine {
			dst = append(dst, '=', '\r', '\n')
			lineLen = 0
		}
		// A run of bytes written as they are, up to the end of the line: 8 at a time while
		// they are all printable (space included) and no "=", then one at a time.
		j := i
		end := min(len(src), i+qpMaxLine-lineLen)
		for j+8 <= end && printable8(binary.LittleEndian.Uint64(src[j:])) {
			if src[j+7] == ' ' && (j+8 == len(src) || text && src[j+8] == '\n') {
				break // the block ends a line with a space
			}
			j += 8
		}
		for ; j < end && qpSafe[src[j]]; j++ {
			if src[j] == ' ' && (j+1 == len(src) || text && src[j+1] == '\n') {
				break // no trailing space on a line: encode it
			}
		}
		if j > i {
			dst = append(dst, src[i:j]...)
			lineLen += j - i
			i = j
			continue
		}
		if lineLen+3 > qpMaxLine {
			dst = append(dst, '=', '\r', '\n')
			lineLen = 0
		}
		dst = append(dst, '=', upperHex[c>>4], upperHex[c&0xF])
		lineLen += 3
		i++
	}
	return append(dst, '=', '\r', '\n')
}
