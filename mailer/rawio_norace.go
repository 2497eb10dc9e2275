//go:build linux && !race

package mailer

// raceRead and raceWrite do something in race builds only (rawio_race.go).
func raceRead(uintptr)  {}
func raceWrite(uintptr) {}
