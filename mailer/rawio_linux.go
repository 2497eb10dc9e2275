package mailer

import (
	"io"
	"net"
	"os"
	"sync"
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
	// r and w are the Read and the Write in progress.
	r, w rawOp
}

// rawOp is one direction's call in progress. Its state lives here and the functions it hands
// the poller are made once, so a call allocates nothing (a closure over per-call variables
// cost two allocations per call). mu makes the direction's calls take turns, as net.Conn
// allows several goroutines to call (the session has one).
type rawOp struct {
	mu    sync.Mutex
	p     []byte
	n     int
	errno syscall.Errno
	wait  func(func(fd uintptr) bool) error // the RawConn's Read or Write
	try   func(fd uintptr) bool             // one attempt on the socket: false to wait
}

// do runs the call on p: it returns what the attempts did and the poller's error (the
// deadline, a closed connection).
func (o *rawOp) do(p []byte) (n int, errno syscall.Errno, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.p, o.n, o.errno = p, 0, 0
	err = o.wait(o.try)
	n, errno = o.n, o.errno
	o.p = nil // the caller's buffer is not kept
	return n, errno, err
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
	r := &rawConn{Conn: c}
	r.r.wait, r.r.try = rc.Read, r.r.read
	r.w.wait, r.w.try = rc.Write, r.w.write
	return r
}

// Read reads what the socket holds, waiting (under the connection's deadline) when it
// holds nothing yet.
func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, errno, err := c.r.do(p)
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

// read is one attempt of a Read.
func (o *rawOp) read(fd uintptr) bool {
	p := o.p
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			o.n = int(r)
			if o.n > 0 {
				raceRead(fd)
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			o.errno = e
			return true
		}
	}
}

// Write writes all of p, waiting (under the connection's deadline) while the socket's send
// buffer is full.
func (c *rawConn) Write(p []byte) (int, error) {
	n, errno, err := c.w.do(p)
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

// write is one attempt of a Write: it goes on from what the attempts before it wrote.
func (o *rawOp) write(fd uintptr) bool {
	raceWrite(fd)
	p := o.p
	for o.n < len(p) {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[o.n])), uintptr(len(p)-o.n),
			syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			o.n += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			o.errno = e
			return true
		}
	}
	return true
}

// opError wraps errno as net.Conn wraps the errors of its own reads and writes.
func (c *rawConn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
