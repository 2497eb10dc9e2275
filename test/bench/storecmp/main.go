// Command storecmp measures what keeping the delivery ledger on disk costs per email with the
// two candidates of issue 15: internal/journal (our append-only file: one pwrite per email,
// one fdatasync per flush) and go.etcd.io/bbolt (one transaction per email without sync, then
// db.Sync per flush, which keeps the same crash guarantee; and, for reference, one
// transaction per flush, which does not). It prints CPU and wall time per email and the file
// size. It is its own module so that bbolt never becomes a dependency of the plugin:
//
//	cd test/bench/storecmp && go run . -emails 20000 -flush 100
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/smtpout/smtpout/internal/journal"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func key(i int) [16]byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	s := sha256.Sum256(b[:])
	var k [16]byte
	copy(k[:], s[:16])
	return k
}

type result struct {
	name      string
	cpu, wall time.Duration
	bytes     int64
}

func measure(name string, emails int, path string, run func()) result {
	c0, w0 := cpu(), time.Now()
	run()
	r := result{name: name, cpu: cpu() - c0, wall: time.Since(w0)}
	if fi, err := os.Stat(path); err == nil {
		r.bytes = fi.Size()
	}
	return r
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "storecmp:", err)
		os.Exit(1)
	}
}

func main() {
	emails := flag.Int("emails", 20000, "settlements written")
	per := flag.Int("flush", 100, "emails per flush (one sync each)")
	dir := flag.String("dir", "", "directory for the files (default: a temporary directory)")
	flag.Parse()
	if *dir == "" {
		d, err := os.MkdirTemp("", "storecmp-")
		must(err)
		defer os.RemoveAll(d)
		*dir = d
	}
	now := time.Now().UnixNano()
	var results []result

	j, _, err := journal.Open(*dir, "j", journal.Options{MaxEntries: 10 * *emails}, func(journal.Entry) {})
	must(err)
	results = append(results, measure("journal: pwrite per email, fdatasync per flush", *emails, journal.Path(*dir, "j"), func() {
		for i := 0; i < *emails; i++ {
			must(j.Append(journal.Entry{Kind: journal.Settled, Time: now, Key: key(i)}))
			if (i+1)%*per == 0 {
				must(j.Sync())
			}
		}
		must(j.Sync())
	}))
	must(j.Close())

	for _, batch := range []bool{false, true} {
		path := filepath.Join(*dir, fmt.Sprintf("bolt-%v.db", batch))
		db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true})
		must(err)
		must(db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("s")); return err }))
		name := "bbolt: tx per email (no sync), db.Sync per flush"
		if batch {
			name = "bbolt: one tx per flush + db.Sync (loses a flush on SIGKILL)"
		}
		put := func(tx *bolt.Tx, i int) error {
			k := key(i)
			var v [8]byte
			binary.LittleEndian.PutUint64(v[:], uint64(now))
			return tx.Bucket([]byte("s")).Put(k[:], v[:])
		}
		results = append(results, measure(name, *emails, path, func() {
			for i := 0; i < *emails; i += *per {
				end := min(i+*per, *emails)
				if batch {
					must(db.Update(func(tx *bolt.Tx) error {
						for n := i; n < end; n++ {
							if err := put(tx, n); err != nil {
								return err
							}
						}
						return nil
					}))
				} else {
					for n := i; n < end; n++ {
						must(db.Update(func(tx *bolt.Tx) error { return put(tx, n) }))
					}
				}
				must(db.Sync())
			}
		}))
		must(db.Close())
	}

	fmt.Printf("%d settlements, one sync per %d, in %s\n", *emails, *per, *dir)
	fmt.Printf("%-62s %14s %15s %12s\n", "", "CPU µs/email", "wall µs/email", "bytes/email")
	for _, r := range results {
		fmt.Printf("%-62s %14.2f %15.2f %12.1f\n", r.name,
			float64(r.cpu.Microseconds())/float64(*emails), float64(r.wall.Microseconds())/float64(*emails), float64(r.bytes)/float64(*emails))
	}
}
