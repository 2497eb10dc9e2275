module github.com/smtpout/smtpout

go 1.26.8

require (
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6
	github.com/emersion/go-smtp v0.25.1
	github.com/fluent/fluent-bit-go v0.0.0-20260305090907-bda21e692da6
	github.com/goccy/go-yaml v1.19.2
	github.com/google/go-cmp v0.7.0
	github.com/wneessen/go-mail v0.8.1
	golang.org/x/net v0.56.0
	golang.org/x/oauth2 v0.38.0
)

require (
	github.com/mitchellh/mapstructure v1.5.0 // indirect
	github.com/ugorji/go/codec v1.1.7 // indirect
	golang.org/x/crypto v0.54.0 // indirect
	golang.org/x/text v0.40.0 // indirect
)
