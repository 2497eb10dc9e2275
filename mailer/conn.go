package mailer

import (
	"context"
	"time"
)

// conn is the connection one worker of a Send delivers on: the session it holds (nil until
// one is dialled), the watcher that aborts the session's I/O when the Send's context ends,
// and the steps both delivery paths (deliver, deliverGroup) take on it. One goroutine uses it.
type conn struct {
	m       *Mailer
	ctx     context.Context
	s       *session
	unwatch func() bool
}

// newConn wraps s, a pooled session or nil, for one worker of a Send under ctx.
func (m *Mailer) newConn(ctx context.Context, s *session) *conn {
	c := &conn{m: m, ctx: ctx}
	if s != nil {
		c.hold(s)
	}
	return c
}

// hold makes s the session of c and watches it.
func (c *conn) hold(s *session) {
	c.s = s
	c.unwatch = s.watch(c.ctx)
}

// ensure makes c hold a session fit for the next transaction: one idle longer than the
// Mailer's noopAfter is checked with NOOP first and dropped when that fails; without one, a
// new one is dialled. reused reports whether the session carried transactions before, so that
// a failure before the server accepted anything may only mean it went stale.
func (c *conn) ensure() (reused bool, err error) {
	if c.s != nil && c.m.noopAfter > 0 && time.Since(c.s.lastUsed) > c.m.noopAfter {
		if err := c.s.noop(c.ctx); err != nil {
			c.drop()
		}
	}
	if c.s != nil {
		return true, nil
	}
	s, err := c.m.dial(c.ctx)
	if err != nil {
		return false, err
	}
	c.hold(s)
	return false, nil
}

// drop closes the session (without QUIT) and forgets it.
func (c *conn) drop() {
	c.unwatch()
	c.s.close()
	c.s, c.unwatch = nil, nil
}

// dropBroken drops the session when its last transaction left it broken.
func (c *conn) dropBroken() {
	if c.s != nil && c.s.broken {
		c.drop()
	}
}

// release stops watching the session and hands it (or only its slot) back to the pool.
func (c *conn) release() {
	if c.unwatch != nil {
		c.unwatch()
	}
	c.m.release(c.s)
	c.s, c.unwatch = nil, nil
}

// pipelinesGroups reports whether the session held takes groups of messages (sendGroup).
func (c *conn) pipelinesGroups() bool {
	return c.s != nil && c.s.chunking && c.m.groupMax > 1
}
