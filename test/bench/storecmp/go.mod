module github.com/smtpout/smtpout/test/bench/storecmp

go 1.26.8

require (
	github.com/smtpout/smtpout v0.0.0
	go.etcd.io/bbolt v1.4.3
)

require golang.org/x/sys v0.29.0 // indirect

replace github.com/smtpout/smtpout => ../../..
