package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/google/go-cmp/cmp"
)

// make helm-test (issue 21): the official charts (HELM_CHARTS, ../shared/helm-charts) rendered
// with deploy/helm's values by the real helm (HELM), the rendered objects read back, and then
// run: each pod's ConfigMap files, Secret files, volumes, command, arguments and environment
// laid out in a temporary directory (every mount path mapped to a directory there, every
// Service address to 127.0.0.1 and a free port), started with the real Fluent Bit
// (FLUENT_BIT) and the built plugin: a container log line on the agent's node arrives as a
// signed email. Only the mail provider's keys are replaced (dest_host, is_starttls, and the
// test's CA): a values change that breaks the real configuration fails here.

// The names the README's install commands use.
const (
	helmNamespace  = "logging"
	helmAggRelease = "smtpout-aggregator"
	helmAgtRelease = "fluent-bit"
)

// k8sObject is the part of a rendered Kubernetes object the test reads.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"` // ConfigMap
	Spec struct {
		Replicas    int    `yaml:"replicas"`    // StatefulSet
		ServiceName string `yaml:"serviceName"` // StatefulSet
		ClusterIP   string `yaml:"clusterIP"`   // Service
		Ports       []struct {
			Name string `yaml:"name"`
			Port int    `yaml:"port"`
		} `yaml:"ports"` // Service
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               map[string]any `yaml:"securityContext"`
	InitContainers                []container    `yaml:"initContainers"`
	Containers                    []container    `yaml:"containers"`
	Volumes                       []volume       `yaml:"volumes"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	SecurityContext struct {
		ReadOnlyRootFilesystem bool `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot           bool `yaml:"runAsNonRoot"`
		RunAsUser              int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
	} `yaml:"secret"`
	Image *struct {
		Reference string `yaml:"reference"`
	} `yaml:"image"`
	HostPath *struct {
		Path string `yaml:"path"`
	} `yaml:"hostPath"`
	EmptyDir map[string]any `yaml:"emptyDir"`
}

// rendered is one release's objects by kind and name.
type rendered map[string]map[string]*k8sObject

func (r rendered) one(t *testing.T, kind string) *k8sObject {
	t.Helper()
	if len(r[kind]) != 1 {
		t.Fatalf("rendered %d %s objects, want 1", len(r[kind]), kind)
	}
	for _, o := range r[kind] {
		return o
	}
	return nil
}

// helmTemplate renders chart (a folder of HELM_CHARTS) as release in helmNamespace with the
// values files of deploy/helm, and reads the objects back.
func helmTemplate(t *testing.T, release, chart string, values ...string) rendered {
	t.Helper()
	helm := os.Getenv("HELM")
	charts := os.Getenv("HELM_CHARTS")
	if helm == "" || charts == "" {
		t.Skip("skipped: set HELM=/path/to/helm and HELM_CHARTS=/path/to/helm-charts (make helm-test)")
	}
	args := []string{"template", release, filepath.Join(charts, chart), "--namespace", helmNamespace}
	for _, v := range values {
		args = append(args, "-f", filepath.Join(moduleRoot(t), "deploy", "helm", v))
	}
	cmd := exec.Command(helm, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	r := make(rendered)
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("helm template %s: reading the objects: %v", chart, err)
		}
		if o.Kind == "" {
			continue
		}
		if r[o.Kind] == nil {
			r[o.Kind] = make(map[string]*k8sObject)
		}
		r[o.Kind][o.Metadata.Name] = &o
	}
	return r
}

// podRun lays out one pod's container and runs it as a Fluent Bit process.
type podRun struct {
	t      *testing.T
	dir    string
	paths  map[string]string // mount path in the container -> directory here
	files  map[string][]byte // ConfigMap and Secret files, by path in the container, to write
	env    []string
	args   []string
	proc   *fbProcess
	plugin string // the built smtpout.so, for image volumes
}

// layOut maps every mount of the container named name (and the image's /fluent-bit/etc) to a
// directory under a new temporary one: ConfigMaps from configMaps (a release's), Secrets from
// secrets (file name -> content), image volumes as a directory holding smtpout.so, and every
// other volume (host paths, emptyDir, persistent volume claims) as an empty directory.
func layOut(t *testing.T, pod podSpec, name string, configMaps rendered, secrets map[string]string, podIndex int) *podRun {
	t.Helper()
	so, _ := artifacts(t)
	p := &podRun{t: t, dir: t.TempDir(), paths: make(map[string]string), files: make(map[string][]byte), plugin: so}
	var c *container
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			c = &pod.Containers[i]
		}
	}
	if c == nil {
		t.Fatalf("no container %q in the pod", name)
	}
	vols := make(map[string]volume)
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	// The image's own files: parsers.conf, as the official image has it.
	etc := filepath.Join(p.dir, "image-etc")
	mustMkdir(t, etc)
	p.paths["/fluent-bit/etc"] = etc
	parsers, err := os.ReadFile(filepath.Join(moduleRoot(t), "parsers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	p.files["/fluent-bit/etc/parsers.conf"] = parsers
	for i, m := range c.VolumeMounts {
		d := filepath.Join(p.dir, fmt.Sprintf("mount%d-%s", i, m.Name))
		mustMkdir(t, d)
		p.paths[m.MountPath] = d
		v, ok := vols[m.Name]
		switch {
		case !ok: // a volume claim template: the pod's persistent volume
		case v.ConfigMap != nil:
			cm := configMaps["ConfigMap"][v.ConfigMap.Name]
			if cm == nil {
				t.Fatalf("volume %s: no ConfigMap %s rendered", m.Name, v.ConfigMap.Name)
			}
			for f, content := range cm.Data {
				p.files[m.MountPath+"/"+f] = []byte(content)
			}
		case v.Secret != nil:
			for f, content := range secrets {
				p.files[m.MountPath+"/"+f] = []byte(content)
			}
		case v.Image != nil:
			if err := os.Symlink(so, filepath.Join(d, "smtpout.so")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, e := range c.Env {
		val := e.Value
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef.FieldPath != "metadata.labels['apps.kubernetes.io/pod-index']" {
				t.Fatalf("env %s: no value for %s here", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			val = fmt.Sprint(podIndex)
		}
		p.env = append(p.env, e.Name+"="+val)
	}
	if len(c.Command) != 1 || c.Command[0] != "/fluent-bit/bin/fluent-bit" {
		t.Fatalf("container %s runs %q, want /fluent-bit/bin/fluent-bit", name, c.Command)
	}
	p.args = c.Args
	return p
}

// mapPaths replaces every mount path in s by its directory here, longest first.
func (p *podRun) mapPaths(s string) string {
	mounts := make([]string, 0, len(p.paths))
	for m := range p.paths {
		mounts = append(mounts, m)
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	pairs := make([]string, 0, 2*len(mounts))
	for _, m := range mounts {
		pairs = append(pairs, m, p.paths[m])
	}
	return strings.NewReplacer(pairs...).Replace(s)
}

// edit changes the file at path in the container (which must exist) with fn.
func (p *podRun) edit(path string, fn func(string) string) {
	p.t.Helper()
	b, ok := p.files[path]
	if !ok {
		p.t.Fatalf("no file %s in the pod", path)
	}
	p.files[path] = []byte(fn(string(b)))
}

// start writes the files with their paths mapped and starts Fluent Bit (ready: nil or a
// check); the process is stopped when the test ends.
func (p *podRun) start(name string, ready func() bool) {
	p.t.Helper()
	for path, b := range p.files {
		real := p.mapPaths(path)
		mustMkdir(p.t, filepath.Dir(real))
		if err := os.WriteFile(real, []byte(p.mapPaths(string(b))), 0o600); err != nil {
			p.t.Fatal(err)
		}
	}
	var args, env []string
	for _, a := range p.args {
		args = append(args, p.mapPaths(a))
	}
	for _, e := range p.env {
		env = append(env, p.mapPaths(e))
	}
	p.proc = &fbProcess{t: p.t, name: name, args: args, env: env, logPath: filepath.Join(p.dir, "fluent-bit.log"), ready: ready}
	p.proc.start()
	p.t.Cleanup(func() {
		if p.proc.cmd != nil {
			p.proc.term()
		}
		if p.t.Failed() {
			p.t.Logf("%s log:\n%s", name, p.proc.log())
		}
	})
}

func mustMkdir(t *testing.T, d string) {
	t.Helper()
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
}

// aggConfig is the part of the aggregator's fluent-bit.yaml the test checks and changes.
type aggConfig = map[string]any

// section returns m[key] as a map, failing the test when it is not one.
func section(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	s, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("rendered configuration: %s is %T, want a map", key, m[key])
	}
	return s
}

// smtpOutputs returns the smtp outputs of a parsed fluent-bit.yaml.
func smtpOutputs(t *testing.T, conf aggConfig) []map[string]any {
	t.Helper()
	outs, _ := section(t, conf, "pipeline")["outputs"].([]any)
	var smtp []map[string]any
	for _, o := range outs {
		if m, ok := o.(map[string]any); ok && m["name"] == "smtp" {
			smtp = append(smtp, m)
		}
	}
	return smtp
}

// TestHelmAggregatorValuesHoldTogether checks what the values promise in comments against
// what the chart renders: the plugin from the image volume, the ledger on the persistent
// volume next to the buffer, the secrets as files, Workers 0 whenever hot reload is on (the
// only form that survives repeated reloads), flush_timeout + 1 s < Grace and
// flush_timeout + 1 s + Grace < terminationGracePeriodSeconds, non-root with a read-only root,
// and the variants differing
// from aggregator.yaml only where they say.
func TestHelmAggregatorValuesHoldTogether(t *testing.T) {
	base := helmTemplate(t, helmAggRelease, "fluent-bit-aggregator", "aggregator.yaml")
	conf := parseAggConfig(t, base)
	sts := base.one(t, "StatefulSet")
	pod := sts.Spec.Template.Spec
	agg := pod.Containers[0]
	service := section(t, conf, "service")
	smtp := smtpOutputs(t, conf)
	if len(smtp) != 1 {
		t.Fatalf("%d smtp outputs rendered, want 1", len(smtp))
	}
	out := smtp[0]

	mounts := make(map[string]string) // mount path -> volume name
	for _, m := range agg.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	images := make(map[string]bool)
	for _, v := range pod.Volumes {
		if v.Image != nil {
			images[v.Name] = true
		}
	}
	plugins, _ := conf["plugins"].([]any)
	if len(plugins) != 1 || !images[mounts[filepath.Dir(fmt.Sprint(plugins[0]))]] {
		t.Errorf("plugins %v: want one .so in a directory mounted from an image volume (mounts %v)", plugins, mounts)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || mounts["/fluent-bit/data"] != sts.Spec.VolumeClaimTemplates[0].Metadata.Name {
		t.Errorf("/fluent-bit/data is not the persistent volume (mounts %v)", mounts)
	}
	if service["storage.path"] != "${STORAGE_PATH}" || out["ledger_dir"] != "${STORAGE_PATH}" {
		t.Errorf("storage.path %v and ledger_dir %v: want both ${STORAGE_PATH}, the persistent volume", service["storage.path"], out["ledger_dir"])
	}
	for _, k := range []string{"password_file", "secret_key_file"} {
		if v, _ := out[k].(string); mounts[filepath.Dir(v)] == "" {
			t.Errorf("%s %q is not in a mounted Secret", k, v)
		}
	}
	for _, k := range []string{"password", "secret_key"} {
		if _, ok := out[k]; ok {
			t.Errorf("%s is in the ConfigMap; it belongs in the Secret", k)
		}
	}
	if service["hot_reload"] == true && fmt.Sprint(out["workers"]) != "0" {
		t.Errorf("hot reload on with workers %v: Fluent Bit's Go proxy crashes on the second reload unless workers is 0", out["workers"])
	}
	var grace, flushTimeout float64
	fmt.Sscan(fmt.Sprint(service["grace"]), &grace)
	fmt.Sscanf(fmt.Sprint(out["flush_timeout"]), "%fs", &flushTimeout)
	// Grace starts after the flush returns when it holds the engine thread (workers 0).
	if !(flushTimeout > 0 && flushTimeout+1 < grace && flushTimeout+1+grace < float64(pod.TerminationGracePeriodSeconds)) {
		t.Errorf("flush_timeout %vs + 1 s < Grace %vs, and flush_timeout + 1 s + Grace < terminationGracePeriodSeconds %d: does not hold", flushTimeout, grace, pod.TerminationGracePeriodSeconds)
	}
	if sc := agg.SecurityContext; !sc.ReadOnlyRootFilesystem || !sc.RunAsNonRoot || sc.RunAsUser == 0 {
		t.Errorf("container security context %+v: want non-root with a read-only root", sc)
	}

	t.Run("workload identity", func(t *testing.T) {
		wi := helmTemplate(t, helmAggRelease, "fluent-bit-aggregator", "aggregator.yaml", "aggregator-workload-identity.yaml")
		wiOut := smtpOutputs(t, parseAggConfig(t, wi))[0]
		want := make(map[string]any)
		for k, v := range out {
			if k != "username" && k != "password_file" {
				want[k] = v
			}
		}
		for k, v := range wiOut {
			if strings.HasPrefix(k, "auth_") {
				want[k] = v
			}
		}
		if diff := cmp.Diff(want, wiOut); diff != "" {
			t.Errorf("the workload identity output differs from aggregator.yaml's beyond auth_* (-want +got):\n%s", diff)
		}
		if wiOut["auth_client_assertion_file"] != "${AZURE_FEDERATED_TOKEN_FILE}" {
			t.Errorf("auth_client_assertion_file %v, want the file the webhook names", wiOut["auth_client_assertion_file"])
		}
		if l := wi.one(t, "StatefulSet").Spec.Template.Metadata.Labels["azure.workload.identity/use"]; l != "true" {
			t.Errorf("pod label azure.workload.identity/use = %q, want true", l)
		}
	})
	t.Run("full image", func(t *testing.T) {
		fi := helmTemplate(t, helmAggRelease, "fluent-bit-aggregator", "aggregator.yaml", "aggregator-fullimage.yaml")
		fpod := fi.one(t, "StatefulSet").Spec.Template.Spec
		for _, v := range fpod.Volumes {
			if v.Image != nil {
				t.Errorf("volume %s is still an image volume", v.Name)
			}
		}
		for _, m := range fpod.Containers[0].VolumeMounts {
			if m.MountPath == "/fluent-bit/plugins" {
				t.Errorf("/fluent-bit/plugins is still mounted over the image's plugin")
			}
		}
		if img := fpod.Containers[0].Image; !strings.Contains(img, "/smtpout:") {
			t.Errorf("image %s, want the full smtpout image", img)
		}
	})
}

// parseAggConfig returns the aggregator's rendered fluent-bit.yaml, parsed.
func parseAggConfig(t *testing.T, r rendered) aggConfig {
	t.Helper()
	var conf aggConfig
	var text string
	for _, cm := range r["ConfigMap"] {
		if f, ok := cm.Data["fluent-bit.yaml"]; ok {
			text = f
		}
	}
	if err := yaml.Unmarshal([]byte(text), &conf); err != nil {
		t.Fatalf("the rendered fluent-bit.yaml: %v\n%s", err, text)
	}
	return conf
}

// TestHelmAgentToAggregatorDelivers renders both charts and runs them: both aggregator
// replicas and one agent, a critical and an informational container log line per record on
// the agent's node: only the critical ones arrive, each once, signed, through the password
// and secret_key from the Secret files. Then each aggregator is reloaded twice, as the chart's
// reload sidecar does (POST /api/v2/reload), and more records still arrive.
func TestHelmAgentToAggregatorDelivers(t *testing.T) {
	aggR := helmTemplate(t, helmAggRelease, "fluent-bit-aggregator", "aggregator.yaml")
	agtR := helmTemplate(t, helmAgtRelease, "fluent-bit", "agent.yaml")
	fluentBit(t)
	const user, password = "alerts@example.com", "test-password"
	fs := startFaultServer(t, faultOptions{users: map[string]string{user: password}})
	secrets := map[string]string{"password": password + "\n", "secret_key": testSecretKey + "\n"}

	sts := aggR.one(t, "StatefulSet")
	svc := aggR["Service"][sts.Metadata.Name]
	if svc == nil {
		t.Fatalf("no Service %s for the StatefulSet", sts.Metadata.Name)
	}
	forwardPort := 0
	for _, p := range svc.Spec.Ports {
		if p.Name == "http-forward" {
			forwardPort = p.Port
		}
	}
	if sts.Spec.Replicas < 1 || forwardPort == 0 {
		t.Fatalf("StatefulSet replicas %d, Service forward port %d", sts.Spec.Replicas, forwardPort)
	}

	// The aggregator replicas, each on its own ports and volume.
	type replica struct {
		pod       *podRun
		forward   string // 127.0.0.1:port
		http      string
		dnsName   string // what the agents call it
		reloadsAt int
	}
	var reps []*replica
	for i := range sts.Spec.Replicas {
		p := layOut(t, sts.Spec.Template.Spec, "aggregator", aggR, secrets, i)
		fwd, httpPort := fmt.Sprint(freePort(t)), fmt.Sprint(freePort(t))
		r := &replica{pod: p, forward: "127.0.0.1:" + fwd, http: "127.0.0.1:" + httpPort,
			dnsName: fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local", sts.Metadata.Name, i, sts.Spec.ServiceName, helmNamespace)}
		for j, e := range p.env {
			if strings.HasPrefix(e, "ADDITIONAL_PORT_HTTP_FORWARD=") {
				p.env[j] = "ADDITIONAL_PORT_HTTP_FORWARD=" + fwd
			}
		}
		p.edit("/fluent-bit/etc/conf/fluent-bit.yaml", func(s string) string {
			var conf aggConfig
			if err := yaml.Unmarshal([]byte(s), &conf); err != nil {
				t.Fatal(err)
			}
			env := section(t, conf, "env")
			env["ADDITIONAL_PORT_0"] = fwd
			service := section(t, conf, "service")
			service["http_Port"] = httpPort
			service["http_listen"] = "127.0.0.1"
			for _, in := range section(t, conf, "pipeline")["inputs"].([]any) {
				in.(map[string]any)["listen"] = "127.0.0.1"
			}
			for _, out := range smtpOutputs(t, conf) {
				// The mail provider: the test's server instead.
				out["dest_host"] = fs.addr
				out["is_starttls"] = false
				out["tls_ca_file"] = fs.cert.CAFile
				out["tls_server_name"] = "localhost"
				out["helo_name"] = fmt.Sprintf("%s-%d", sts.Metadata.Name, i)
			}
			b, err := yaml.Marshal(conf)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		})
		p.start(fmt.Sprintf("aggregator-%d", i), func() bool { return listening(r.forward) })
		reps = append(reps, r)
	}

	// The agent, its upstream nodes mapped to the replicas.
	ds := agtR.one(t, "DaemonSet")
	agent := layOut(t, ds.Spec.Template.Spec, "fluent-bit", agtR, nil, 0)
	agent.edit("/fluent-bit/etc/conf/upstream.conf", func(s string) string {
		for _, r := range reps {
			node := fmt.Sprintf("host %s\n    port %d", r.dnsName, forwardPort)
			if !strings.Contains(s, node) {
				t.Fatalf("upstream.conf has no node %q: the agents would not reach that replica\n%s", node, s)
			}
			host, port, _ := net.SplitHostPort(r.forward)
			s = strings.Replace(s, node, fmt.Sprintf("host %s\n    port %s", host, port), 1)
		}
		return s
	})
	containers := agent.mapPaths("/var/log/containers")
	agent.edit("/fluent-bit/etc/conf/fluent-bit.conf", func(s string) string {
		for old, repl := range map[string]string{
			"HTTP_Port 2020":      "HTTP_Port " + fmt.Sprint(freePort(t)),
			"HTTP_Listen 0.0.0.0": "HTTP_Listen 127.0.0.1",
			// No Kubernetes API here: the filter's dummy metadata, and the tag prefix of the
			// node's log directory as mapped here.
			"Name kubernetes\n": "Name kubernetes\n    Dummy_Meta On\n    Kube_Tag_Prefix kube" + strings.ReplaceAll(containers, "/", ".") + ".\n",
		} {
			if !strings.Contains(s, old) {
				t.Fatalf("fluent-bit.conf has no %q", old)
			}
			s = strings.Replace(s, old, repl, 1)
		}
		return s
	})
	mustMkdir(t, containers)
	// The container's log file exists when the agent starts; tail reads on from its end once
	// it watches it.
	appLog := filepath.Join(containers, "payments-7d9f_default_api-0123456789abcdef.log")
	if err := os.WriteFile(appLog, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	agent.start("agent", func() bool { return len(linesWith(agent.proc.log(), "inotify_fs_add", appLog)) > 0 })

	logLine := func(n int, severity string) string {
		ts := time.Date(2026, 12, 5, 10, 0, 0, n, time.UTC).Format(time.RFC3339Nano)
		return fmt.Sprintf("%s stdout F {\"severity\":%q,\"message\":\"disk %d full\",\"n\":%d}\n", ts, severity, n, n)
	}
	write := func(first, count int) {
		f, err := os.OpenFile(appLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		for n := first; n < first+count; n++ {
			_, _ = f.WriteString(logLine(n, "critical") + logLine(1000+n, "info"))
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	const batch = 6 // below each replica's max_emails_per_minute (15), with room for both rounds
	write(0, batch)
	waitDistinct(fs, batch, time.Minute)

	// The reload sidecar's request, twice per replica, 3 s apart (a Go output with Workers
	// crashed 2.5 s after its second reload: the output threads' scheduler timer).
	for i, r := range reps {
		for range 2 {
			time.Sleep(3 * time.Second)
			resp, err := http.Post("http://"+r.http+"/api/v2/reload", "application/json", nil)
			if err != nil {
				t.Fatalf("aggregator-%d: reload: %v", i, err)
			}
			resp.Body.Close()
			r.reloadsAt++
			deadline := time.Now().Add(time.Minute)
			for len(linesWith(r.pod.proc.log(), "[reload] successful reload done")) < r.reloadsAt {
				if gone, err := r.pod.proc.exited(); gone || time.Now().After(deadline) {
					t.Fatalf("aggregator-%d: reload %d not done within a minute (exited: %v %v)", i, r.reloadsAt, gone, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	write(batch, batch)
	waitDistinct(fs, 2*batch, fbWait)
	for i, r := range reps {
		t.Logf("aggregator-%d: %q", i, linesWith(r.pod.proc.log(), "reload"))
	}
	for i, r := range reps {
		resp, err := http.Get("http://" + r.http + "/api/v2/metrics/prometheus")
		if err != nil {
			t.Fatalf("aggregator-%d metrics: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `fluentbit_smtp_emails_delivered_total{name="email"}`) {
			t.Errorf("aggregator-%d: no fluentbit_smtp_emails_delivered_total{name=\"email\"} on the metrics endpoint the values annotate for scraping", i)
		}
	}
	agent.proc.term()
	for _, r := range reps {
		if gone, err := r.pod.proc.exited(); gone {
			t.Errorf("%s ended by itself after its reloads: %v", r.pod.proc.name, err)
		}
		r.pod.proc.term()
	}
	d := checkDelivery(t, fs, span(0, 2*batch))
	byHelo := make(map[string]int)
	for _, m := range fs.Stored() {
		byHelo[m.Helo]++
		if m.N >= 1000 {
			t.Errorf("record %d (severity info) was emailed: the agents forward only critical ones", m.N)
		}
	}
	t.Logf("%s: %d emails, %d duplicates, by replica %v", filepath.Base(filepath.Dir(fluentBit(t))), d.Messages, d.Duplicates, byHelo)
	if d.Duplicates != 0 {
		t.Errorf("%d duplicates, want none", d.Duplicates)
	}
}
