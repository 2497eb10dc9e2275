package mailer

import "time"

// DefaultShrinkFor is how long the connection limit stays lowered after a server refused a
// connection for having too many (Exchange Online's 432 4.3.2).
const DefaultShrinkFor = 10 * time.Minute

// WithShrinkFor sets how long the connection limit stays lowered after a server refused a
// connection for having too many (default DefaultShrinkFor).
func WithShrinkFor(d time.Duration) Option { return func(m *Mailer) { m.shrinkFor = d } }

// ConnectionLimit is how many connections the Mailer opens at once now: max_connections,
// less one for each refusal for too many connections in the last shrink period (at least 1).
func (m *Mailer) ConnectionLimit() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cap(m.slots) - m.held
}

// Shrinks returns how many times the connection limit was lowered.
func (m *Mailer) Shrinks() int64 { return m.shrinks.Load() }

// shrink lowers the connection limit by one, down to 1, for shrinkFor: a goroutine takes a
// slot as soon as one is free (the refused connection's own) and holds it. Close ends it.
func (m *Mailer) shrink() {
	m.mu.Lock()
	if m.closed || m.held >= cap(m.slots)-1 {
		m.mu.Unlock()
		return
	}
	m.held++
	m.mu.Unlock()
	m.shrinks.Add(1)
	go func() {
		defer func() {
			m.mu.Lock()
			m.held--
			m.mu.Unlock()
		}()
		select {
		case m.slots <- struct{}{}:
		case <-m.done:
			return
		}
		defer func() { <-m.slots }()
		t := time.NewTimer(m.shrinkFor)
		defer t.Stop()
		select {
		case <-t.C:
		case <-m.done:
		}
	}()
}
