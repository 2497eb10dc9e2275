//go:build race

package output

// raceEnabled: the race detector is on. sync.Pool then drops objects at random, so counts of
// allocations mean nothing.
const raceEnabled = true
