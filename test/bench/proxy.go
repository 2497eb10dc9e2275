package main

import (
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// DelayProxy is a loopback TCP proxy that simulates a round-trip time: every byte is delivered
// RTT/2 after it was read, in each direction, in order, and a new connection waits one RTT
// before any byte flows (the TCP handshake a real connection pays).
type DelayProxy struct {
	ln     net.Listener
	target string
	rtt    time.Duration

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartDelayProxy listens on 127.0.0.1:0 and forwards to target with the given RTT.
func StartDelayProxy(target string, rtt time.Duration) (*DelayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &DelayProxy{ln: ln, target: target, rtt: rtt, conns: make(map[net.Conn]struct{})}
	// Each writer may hold a P for up to 2 ms in nanosleep (preciseSleep): give the process
	// enough Ps that the sink and the other writers always find one. Idle Ps cost nothing.
	if runtime.GOMAXPROCS(0) < 64 {
		runtime.GOMAXPROCS(64)
	}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the proxy's host:port.
func (p *DelayProxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, closes every proxied connection and waits for the goroutines.
func (p *DelayProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *DelayProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *DelayProxy) handle(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		_ = client.Close()
		return
	}
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(server) {
		_ = server.Close()
		return
	}
	defer p.untrack(server)
	time.Sleep(p.rtt) // SYN, SYN-ACK: the client's first bytes wait in its socket meanwhile
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); delayCopy(server, client, p.rtt/2) }()
	go func() { defer wg.Done(); delayCopy(client, server, p.rtt/2) }()
	wg.Wait()
}

// packet is bytes read from one side, due on the other side at due.
type packet struct {
	due  time.Time
	data []byte
}

// delayCopy copies src to dst, each read delivered delay after it was read, in order. When src
// ends it half-closes dst once everything read is written; when dst fails it closes src.
func delayCopy(dst, src net.Conn, delay time.Duration) {
	q := make(chan packet, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		failed := false
		for pk := range q {
			if failed {
				continue
			}
			sleepUntil(pk.due)
			if _, err := dst.Write(pk.data); err != nil {
				failed = true
				_ = src.Close()
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok && !failed {
			_ = tc.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			q <- packet{due: time.Now().Add(delay), data: append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-done
}

// sleepUntil sleeps until t: the runtime's timers wake up to a millisecond late (epoll's
// timeout is in milliseconds), which at 10 ms RTT would add several percent to every simulated
// round trip, so the last 2 ms or less are slept with nanosleep(2) on this goroutine's
// thread. That thread keeps its P meanwhile: StartDelayProxy raises GOMAXPROCS so the rest of
// the process (the sink) never waits for one.
func sleepUntil(t time.Time) {
	const coarse = 2 * time.Millisecond
	if d := time.Until(t); d > coarse {
		time.Sleep(d - coarse)
	}
	d := time.Until(t)
	if d <= 0 {
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}
