//go:build linux && race

package mailer

import "syscall"

// Under the race detector, package syscall's Read and Write record that a read happens after
// the writes before it, process-wide (its ioSync): tests that hand data to an in-process
// server rely on it. rawConn's raw calls skip syscall's wrappers, so in race builds only each
// of them is paired with a zero-byte syscall.Read or syscall.Write on the same socket, which
// records the same and moves no data.

// raceRead follows a read that returned data.
func raceRead(fd uintptr) { _, _ = syscall.Read(int(fd), nil) }

// raceWrite comes before a write.
func raceWrite(fd uintptr) { _, _ = syscall.Write(int(fd), nil) }
