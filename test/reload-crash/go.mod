// A minimal Go output plugin that reproduces Fluent Bit's crash on the second hot reload of
// a Go output with Workers (its own module, so the plugin's go vet/go build never see it).
module example.com/reload-crash

go 1.24

require github.com/fluent/fluent-bit-go v0.0.0-20260305090907-bda21e692da6

require (
	github.com/mitchellh/mapstructure v1.5.0 // indirect
	github.com/ugorji/go/codec v1.1.7 // indirect
)
