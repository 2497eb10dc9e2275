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
	rc       syscall.RawConn

	// The state of the Read and of the Write in progress lives here, and the functions rc
	// runs (readFn, writeFn) are made once, so a call allocates nothing: a closure over
	// per-call variables cost two allocations per call. Each mutex makes its direction's
	// calls take turns, as net.Conn allows several goroutines to call (the session has one).
	rmu     sync.Mutex
	rp      []byte
	rn      int
	rerrno  syscall.Errno
	readFn  func(fd uintptr) bool
	wmu     sync.Mutex
	wp      []byte
	wn      int
	werrno  syscall.Errno
	writeFn func(fd uintptr) bool
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
	r := &rawConn{Conn: c, rc: rc}
	r.readFn, r.writeFn = r.read, r.write
	return r
}

// Read reads what the socket holds, waiting (under the connection's deadline) when it
// holds nothing yet.
func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rp, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rp = nil // the caller's buffer is not kept
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

// read is one attempt of Read on the socket: false when it holds nothing yet.
func (c *rawConn) read(fd uintptr) bool {
	p := c.rp
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			c.rn = int(r)
			if c.rn > 0 {
				raceRead(fd)
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			c.rerrno = e
			return true
		}
	}
}

// Write writes all of p, waiting (under the connection's deadline) while the socket's send
// buffer is full.
func (c *rawConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wp, c.wn, c.werrno = p, 0, 0
	err := c.rc.Write(c.writeFn)
	n, errno := c.wn, c.werrno
	c.wp = nil // the caller's buffer is not kept
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, c.opError("write", errno)
	}
	return n, nil
}

// write is one attempt of Write on the socket: false when its send buffer is full.
func (c *rawConn) write(fd uintptr) bool {
	raceWrite(fd)
	p := c.wp
	for c.wn < len(p) {
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[c.wn])), uintptr(len(p)-c.wn),
			syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werrno = e
			return true
		}
	}
	return true
}

// opError wraps errno as net.Conn wraps the errors of its own reads and writes.
func (c *rawConn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
