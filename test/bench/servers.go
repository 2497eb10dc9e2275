package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smtpout/smtpout/testsupport/testcert"
)

// The servers of the real-host mode. Real servers store a message before they answer its
// final "." or BDAT LAST, so their replies trickle one by one; the in-process sink answers at
// once and is the best case. Each server but the sink runs in its own process, so its CPU is
// never counted in Fluent Bit's.

// benchServer is one SMTP server the real-host mode sends to, over implicit TLS with
// AUTH PLAIN (benchUser, benchPass) unless noAuth.
type benchServer struct {
	name  string // short, for the table
	about string // what it is, for the header
	addr  string
	// count returns how many messages the server has stored so far (-1: unknown).
	count func() int64
	close func()
	sink  *Sink // the in-process sink, else nil
	// noAuth: the server offers no AUTH, so clients send none (smtp-sink answers AUTH with
	// 250 where clients expect 235).
	noAuth bool
}

// serveEnv carries serveArgs to a child process of the bench that serves (as JSON).
const serveEnv = "SMTPOUT_BENCH_SERVE"

// serveArgs tell a child process of the bench what to serve.
type serveArgs struct {
	Mode       string // "tls-proxy": TLS terminator in front of Target; "store": StartStoringSink
	CertFile   string
	KeyFile    string
	Target     string // tls-proxy: plain TCP host:port to forward to
	Store      string // store: the directory
	User, Pass string
}

// serveMain is a child process: it listens on 127.0.0.1, prints "ADDR host:port" on its
// standard output and serves until its standard input is closed.
func serveMain(raw string) error {
	var a serveArgs
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return fmt.Errorf("serve arguments: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(a.CertFile, a.KeyFile)
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	var addr string
	switch a.Mode {
	case "store":
		s, err := StartStoringSink(cfg, a.User, a.Pass, a.Store)
		if err != nil {
			return err
		}
		defer s.Close()
		addr = s.Addr()
	case "tls-proxy":
		ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
		if err != nil {
			return err
		}
		defer ln.Close()
		go terminate(ln, a.Target)
		addr = ln.Addr().String()
	default:
		return fmt.Errorf("serve: unknown mode %q", a.Mode)
	}
	fmt.Printf("ADDR %s\n", addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// terminate accepts TLS connections on ln and copies each, decrypted, to a new plain TCP
// connection to target, both ways.
func terminate(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(up, c)
				_ = up.(*net.TCPConn).CloseWrite()
			}()
			_, _ = io.Copy(c, up)
			_ = c.Close()
			wg.Wait()
		}()
	}
}

// startChild runs the bench itself as a serving child process (serveMain) and returns its
// address and a function that stops it.
func startChild(a serveArgs) (addr string, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	raw, err := json.Marshal(a)
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), serveEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() { _ = in.Close(); _ = cmd.Wait() }
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		stop()
		return "", nil, fmt.Errorf("%s server: no address (%q, %v)", a.Mode, line, err)
	}
	return addr, stop, nil
}

// smtpSinkBinary returns Postfix's smtp-sink, extracted from Debian's postfix package into
// cache (apt-get download, dpkg -x) when missing, and the library directory it needs.
func smtpSinkBinary(cache string) (bin, libs string, err error) {
	bin = filepath.Join(cache, "usr", "sbin", "smtp-sink")
	libs = filepath.Join(cache, "usr", "lib", "postfix")
	if _, err := os.Stat(bin); err == nil {
		return bin, libs, nil
	}
	tmp, err := os.MkdirTemp("", "postfix-deb-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	dl := exec.Command("apt-get", "download", "-o", "DPkg::Lock::Timeout=600", "postfix")
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("apt-get download postfix: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "postfix_*.deb"))
	if len(debs) != 1 {
		return "", "", fmt.Errorf("apt-get download postfix: %d packages in %s", len(debs), tmp)
	}
	if out, err := exec.Command("dpkg", "-x", debs[0], cache).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("dpkg -x %s: %v\n%s", debs[0], err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", "", fmt.Errorf("postfix package: %w", err)
	}
	if v, err := exec.Command("dpkg-deb", "-f", debs[0], "Version").Output(); err == nil {
		_ = os.WriteFile(filepath.Join(cache, "VERSION"), v, 0o644)
	}
	return bin, libs, nil
}

// postfixVersion returns the version of the package extracted into cache ("?" if unknown).
func postfixVersion(cache string) string {
	b, err := os.ReadFile(filepath.Join(cache, "VERSION"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// startSMTPSink runs Postfix's smtp-sink on 127.0.0.1 (a plain process, never a daemon),
// appending every transaction to a dump file (-D: it writes each message as it
// arrives, and does not fsync), behind a TLS terminator in its own process.
func startSMTPSink(cache string, cert *testcert.Cert) (*benchServer, error) {
	bin, libs, err := smtpSinkBinary(cache)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// Its own directory, not inside dir (0700): smtp-sink writes as nobody when run as root.
	dumpDir, err := os.MkdirTemp("", "smtp-sink-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dumpDir, 0o777); err != nil {
		os.RemoveAll(dumpDir)
		return nil, err
	}
	dump := filepath.Join(dumpDir, "dump")
	args := []string{"-a", "-c", "-D", dump, "-m", "64", "-h", "localhost"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...)
	}
	plain := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, append(args, "inet:"+plain, "64")...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+libs)
	counters := &lastLine{}
	cmd.Stdout, cmd.Stderr = counters, counters
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dumpDir)
		return nil, fmt.Errorf("start smtp-sink: %w", err)
	}
	stopSink := func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); os.RemoveAll(dumpDir) }
	if err := waitListening(plain, 10*time.Second); err != nil {
		stopSink()
		return nil, fmt.Errorf("smtp-sink: %w (output: %s)", err, counters.String())
	}
	addr, stopProxy, err := startChild(serveArgs{Mode: "tls-proxy", CertFile: cert.CertFile, KeyFile: cert.KeyFile, Target: plain})
	if err != nil {
		stopSink()
		return nil, err
	}
	return &benchServer{
		name:   "smtp-sink",
		noAuth: true,
		about:  "Postfix smtp-sink (Debian postfix " + postfixVersion(cache) + ", -D: appends each message to a dump file, no fsync; PIPELINING, no CHUNKING; -a: no AUTH, as it answers AUTH with 250) behind a Go crypto/tls terminator in its own process",
		addr:   addr,
		count:  counters.messages,
		close:  func() { stopProxy(); stopSink() },
	}, nil
}

// lastLine keeps what smtp-sink -c prints ("sess=N quit=N mesg=N", overwritten with \r).
type lastLine struct {
	mu  sync.Mutex
	buf []byte
}

func (l *lastLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > 4096 {
		l.buf = append([]byte(nil), l.buf[len(l.buf)-1024:]...)
	}
	return len(p), nil
}

func (l *lastLine) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}

// messages returns the last mesg= counter smtp-sink printed (-1 before any).
func (l *lastLine) messages() int64 {
	s := l.String()
	i := strings.LastIndex(s, "mesg=")
	if i < 0 {
		return -1
	}
	f := strings.FieldsFunc(s[i+len("mesg="):], func(r rune) bool { return r < '0' || r > '9' })
	if len(f) == 0 {
		return -1
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// startMailpit runs mailpit with implicit TLS, any credentials accepted, keeping every
// message (--max 0) in a database in dir.
func startMailpit(bin, dir string, cert *testcert.Cert) (*benchServer, error) {
	smtpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	smtpAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(smtpPort))
	api := fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	cmd := exec.Command(bin, "--smtp", smtpAddr, "--listen", fmt.Sprintf("127.0.0.1:%d", apiPort),
		"--disable-version-check", "--smtp-disable-rdns", "--smtp-auth-accept-any",
		"--smtp-tls-cert", cert.CertFile, "--smtp-tls-key", cert.KeyFile, "--smtp-require-tls",
		"--max", "0", "--database", filepath.Join(dir, "mailpit.db"))
	logf, err := os.Create(filepath.Join(dir, "mailpit.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start mailpit: %w", err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() }
	if err := waitListening(smtpAddr, 20*time.Second); err != nil {
		stop()
		return nil, fmt.Errorf("mailpit: %w", err)
	}
	version := "mailpit " + bin
	return &benchServer{
		name:  "mailpit",
		about: version + " (implicit TLS, stores every message in SQLite; no PIPELINING, no CHUNKING)",
		addr:  smtpAddr,
		count: func() int64 { return mailpitTotal(api) },
		close: stop,
	}, nil
}

// mailpitTotal returns mailpit's message count (-1 when it cannot be read).
func mailpitTotal(api string) int64 {
	resp, err := http.Get(api + "/api/v1/messages?limit=1") //nolint:gosec // a loopback URL we built
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		Total int64 `json:"total"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return -1
	}
	return v.Total
}

// startStoringServer runs a go-smtp server in its own process (PIPELINING and CHUNKING, as
// Postfix's smtpd offers them) that writes and syncs each message to a file before replying.
func startStoringServer(dir string, cert *testcert.Cert) (*benchServer, error) {
	store := filepath.Join(dir, "store")
	if err := os.MkdirAll(store, 0o700); err != nil {
		return nil, err
	}
	addr, stop, err := startChild(serveArgs{Mode: "store", CertFile: cert.CertFile, KeyFile: cert.KeyFile,
		Store: store, User: benchUser, Pass: benchPass})
	if err != nil {
		return nil, err
	}
	return &benchServer{
		name:  "go-smtp+fsync",
		about: "go-smtp server in its own process that writes and fsyncs each message to a file before its reply (PIPELINING and CHUNKING)",
		addr:  addr,
		count: func() int64 {
			ents, err := os.ReadDir(store)
			if err != nil {
				return -1
			}
			return int64(len(ents))
		},
		close: stop,
	}, nil
}

// waitListening waits until addr accepts TCP connections.
func waitListening(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return errors.New(addr + " does not accept connections")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
