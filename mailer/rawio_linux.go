package mailer

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawConn is a TCP connection read and written with raw system calls inside Go's network
// poller (syscall.RawConn): a read finds what the server sent, or finds nothing and parks the
// goroutine until the poller reports the socket readable, exactly as net.Conn does, deadlines
// included. What differs is the call itself: net.Conn's Read and Write enter the
// scheduler's system-call state, and in a library hosted by Fluent Bit, whose Go runtime sits
// idle between replies, each entry woke the runtime's monitor thread (sysmon) and could hand
// the processor to another thread. A socket read or write in non-blocking mode returns at
// once, so the raw call holds the processor for its few microseconds instead. Writes use
// MSG_NOSIGNAL: a server that hung up gives EPIPE, never a SIGPIPE to Fluent Bit.
type rawConn struct {
	net.Conn // the *net.TCPConn: deadlines, addresses, Close
	rc       syscall.RawConn
}

// newRawConn wraps c when it exposes its socket (a *net.TCPConn does), else returns c.
func newRawConn(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &rawConn{Conn: c, rc: rc}
}

// Read reads what the socket holds, waiting (under the connection's deadline) when it
// holds nothing yet.
func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case 0:
				n = int(r)
				if n > 0 {
					raceRead(fd)
				}
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, c.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting (under the connection's deadline) while the socket's send
// buffer is full.
func (c *rawConn) Write(p []byte) (int, error) {
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Write(func(fd uintptr) bool {
		raceWrite(fd)
		for n < len(p) {
			r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n),
				syscall.MSG_NOSIGNAL, 0, 0)
			switch e {
			case 0:
				n += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

// opError wraps errno as net.Conn wraps the errors of its own reads and writes.
func (c *rawConn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
