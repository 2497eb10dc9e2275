// Package testsupport is not shipped: its sub-packages (chromium, mailpit, oauthtest,
// testcert) start the real servers and browser the tests run against, and proc reads a
// process's CPU time from /proc. Nothing outside *_test.go files, test/ and test/bench may
// import them.
package testsupport
