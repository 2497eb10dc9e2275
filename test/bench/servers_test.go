package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSMTPSinkCounter: the message count is the last mesg= that smtp-sink -c printed; it
// rewrites its counter line with \r, and prints nothing before the first session ends.
func TestSMTPSinkCounter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   int64
	}{
		{"nothing printed yet", nil, -1},
		{"one line", []string{"sess=0 quit=0 mesg=1"}, 1},
		{"rewritten with carriage returns", []string{"sess=0 quit=0 mesg=1\r", "sess=1 quit=1 mesg=17\r"}, 17},
		{"split across writes", []string{"sess=3 quit=3 mes", "g=2", "05\r"}, 205},
		{"a line without a number", []string{"sess=1 quit=1 mesg=\r"}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l lastLine
			for _, w := range tc.writes {
				if _, err := l.Write([]byte(w)); err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tc.want, l.messages()); diff != "" {
				t.Errorf("messages() (-want +got):\n%s", diff)
			}
		})
	}
}
