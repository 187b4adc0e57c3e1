package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

const manifests = "kubernetes"

// decodeStrict decodes a YAML manifest into v: duplicate keys and fields v
// does not have are errors, as kubectl's strict field validation makes them.
func decodeStrict(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(manifests, file))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("\n---")) {
		t.Fatalf("%s: one object a file", file)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// typeOf is a manifest's apiVersion and kind.
func typeOf(t *testing.T, file string) metav1.TypeMeta {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(manifests, file))
	if err != nil {
		t.Fatal(err)
	}
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(b, &tm); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return tm
}

// DaemonSet is deploy/kubernetes/daemonset.yaml, decoded strictly.
func DaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	var ds appsv1.DaemonSet
	decodeStrict(t, "daemonset.yaml", &ds)
	return &ds
}

// Capabilities are the capabilities the DaemonSet adds, as CAP_ names.
func Capabilities(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, c := range DaemonSet(t).Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add {
		out = append(out, "CAP_"+string(c))
	}
	return out
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor
// the manifest uses; decoding it strictly rejects any other field.
type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			ScrapeTimeout string `json:"scrapeTimeout"`
			HonorLabels   bool   `json:"honorLabels,omitempty"`
			Relabelings   []struct {
				SourceLabels []string `json:"sourceLabels,omitempty"`
				TargetLabel  string   `json:"targetLabel,omitempty"`
				Action       string   `json:"action,omitempty"`
				Regex        string   `json:"regex,omitempty"`
			} `json:"relabelings,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// kustomization is the part of kustomize.config.k8s.io/v1beta1 used.
type kustomization struct {
	metav1.TypeMeta `json:",inline"`
	Resources       []string `json:"resources"`
	Images          []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// TestManifestKinds: every manifest is one of the kinds expected, and no
// RBAC object is among them: pipesnap asks the Kubernetes API nothing.
func TestManifestKinds(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range files {
		tm := typeOf(t, filepath.Base(f))
		got[filepath.Base(f)] = tm.APIVersion + " " + tm.Kind
	}
	want := map[string]string{
		"namespace.yaml":      "v1 Namespace",
		"daemonset.yaml":      "apps/v1 DaemonSet",
		"service.yaml":        "v1 Service",
		"servicemonitor.yaml": "monitoring.coreos.com/v1 ServiceMonitor",
		"kustomization.yaml":  "kustomize.config.k8s.io/v1beta1 Kustomization",
	}
	for f, k := range got {
		if want[f] != k {
			t.Errorf("%s: %s, want %q", f, k, want[f])
		}
	}
	for f := range want {
		if _, ok := got[f]; !ok {
			t.Errorf("%s missing", f)
		}
	}
}

func TestDaemonSet(t *testing.T) {
	ds := DaemonSet(t)
	var ns corev1.Namespace
	decodeStrict(t, "namespace.yaml", &ns)
	if ds.Namespace != ns.Name {
		t.Errorf("namespace %q, the Namespace manifest makes %q", ds.Namespace, ns.Name)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Fatalf("selector %v: %v", ds.Spec.Selector, err)
	}
	pod := ds.Spec.Template.Spec
	if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("the selector %v does not select the pods (%v)", sel, ds.Spec.Template.Labels)
	}
	if !pod.HostPID {
		t.Error("no hostPID: pipesnap would see its own container only")
	}
	if pod.HostNetwork || pod.HostIPC {
		t.Error("hostNetwork/hostIPC are not needed")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("a service account token is mounted: pipesnap asks the Kubernetes API nothing")
	}
	if pod.ServiceAccountName != "" {
		t.Errorf("service account %q: none is needed", pod.ServiceAccountName)
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("%d containers, %d init containers; want one", len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	if c.Command != nil {
		t.Errorf("command %v overrides the image's entrypoint /pipesnap", c.Command)
	}
	if want := []string{"serve", "--all", "--listen", "0.0.0.0:9464"}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9464 || c.Ports[0].HostPort != 0 {
		t.Errorf("ports %+v, want metrics 9464 (no host port)", c.Ports)
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("probe %+v: want an HTTP GET on the metrics port", p)
		}
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Error("no memory limit")
	}

	// The security context: the measured capabilities and nothing else.
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("no securityContext")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("privileged: true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root filesystem is writable")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities drop %v, want [ALL]", sc.Capabilities)
	}
	add := slices.Clone(sc.Capabilities.Add)
	slices.Sort(add)
	if !slices.Equal(add, []corev1.Capability{"BPF", "PERFMON"}) {
		t.Errorf("capabilities add %v, want [BPF PERFMON] (measured: TestCapabilities)", add)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined {
		t.Errorf("seccompProfile %+v: the runtimes' default profiles refuse bpf(2) without CAP_SYS_ADMIN (TestImage measures it)", sc.SeccompProfile)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("runAsUser is not 0: the runtime sockets are root's")
	}

	// Host paths: exactly these, every one read-only.
	vols := map[string]corev1.Volume{}
	hostPaths := map[string]string{} // volume name -> host path
	for _, v := range pod.Volumes {
		vols[v.Name] = v
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	var paths []string
	for _, p := range hostPaths {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	if want := []string{"/proc", "/run", "/sys/kernel/btf"}; !slices.Equal(paths, want) {
		t.Errorf("host paths %v, want %v (no /sys/fs/bpf: nothing is pinned)", paths, want)
	}
	mounts := map[string]string{} // host path -> mount path
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("mount %s: no volume %q", m.MountPath, m.Name)
			continue
		}
		if v.HostPath != nil {
			if !m.ReadOnly {
				t.Errorf("host path %s is mounted read-write at %s", v.HostPath.Path, m.MountPath)
			}
			if m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone {
				t.Errorf("%s: mount propagation %s", m.MountPath, *m.MountPropagation)
			}
			mounts[v.HostPath.Path] = m.MountPath
		} else if v.EmptyDir == nil {
			t.Errorf("volume %s is neither a host path nor an emptyDir", v.Name)
		}
	}
	if mounts["/sys/kernel/btf"] != "/sys/kernel/btf" {
		t.Errorf("kernel BTF at %q, want /sys/kernel/btf, where pipesnap looks", mounts["/sys/kernel/btf"])
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["PIPESNAP_HOST_PROC"] != mounts["/proc"] || mounts["/proc"] == "" {
		t.Errorf("PIPESNAP_HOST_PROC %q, the host's /proc is at %q", env["PIPESNAP_HOST_PROC"], mounts["/proc"])
	}
	if root := env["PIPESNAP_HOST_ROOT"]; root == "" || mounts["/run"] != root+"/run" {
		t.Errorf("PIPESNAP_HOST_ROOT %q, the host's /run is at %q", root, mounts["/run"])
	}
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("tolerations %+v: want every node", pod.Tolerations)
	}

	// The image is the one kustomization.yaml names.
	var k kustomization
	decodeStrict(t, "kustomization.yaml", &k)
	name, _, _ := strings.Cut(c.Image, ":")
	if len(k.Images) != 1 || k.Images[0].Name != name {
		t.Errorf("image %q, kustomization sets %+v", c.Image, k.Images)
	}
}

func TestService(t *testing.T) {
	ds := DaemonSet(t)
	var svc corev1.Service
	decodeStrict(t, "service.yaml", &svc)
	if svc.Namespace != ds.Namespace {
		t.Errorf("namespace %q, the DaemonSet's is %q", svc.Namespace, ds.Namespace)
	}
	if len(svc.Spec.Selector) == 0 {
		t.Fatal("no selector")
	}
	for k, v := range svc.Spec.Selector {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not select the DaemonSet's pods", k, v)
		}
	}
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("ports %+v", svc.Spec.Ports)
	}
	p := svc.Spec.Ports[0]
	if p.Port != 9464 || p.Name != "metrics" || p.TargetPort.String() != ds.Spec.Template.Spec.Containers[0].Ports[0].Name {
		t.Errorf("port %+v: want metrics 9464 to the container's metrics port", p)
	}
	if svc.Annotations["prometheus.io/scrape"] != "true" || svc.Annotations["prometheus.io/port"] != "9464" {
		t.Errorf("annotations %v", svc.Annotations)
	}
}

func TestServiceMonitor(t *testing.T) {
	var svc corev1.Service
	decodeStrict(t, "service.yaml", &svc)
	var sm serviceMonitor
	decodeStrict(t, "servicemonitor.yaml", &sm)
	if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Kind != "ServiceMonitor" || sm.Metadata.Name == "" {
		t.Fatalf("%+v", sm.TypeMeta)
	}
	if sm.Metadata.Namespace != svc.Namespace {
		t.Errorf("namespace %q, the Service's is %q", sm.Metadata.Namespace, svc.Namespace)
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("selector %v (%v) does not select the Service (labels %v)", sm.Spec.Selector, err, svc.Labels)
	}
	if !sm.Spec.NamespaceSelector.Any && !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
		t.Errorf("namespaceSelector %+v leaves out %s", sm.Spec.NamespaceSelector, svc.Namespace)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("endpoints %+v", sm.Spec.Endpoints)
	}
	e := sm.Spec.Endpoints[0]
	if e.Port != svc.Spec.Ports[0].Name || e.Path != "/metrics" || e.Interval == "" {
		t.Errorf("endpoint %+v: want the Service's %s port, /metrics", e, svc.Spec.Ports[0].Name)
	}
	// pipesnap's own namespace, pod and container labels are kept: the
	// target's labels of those names are dropped, not the series'.
	if e.HonorLabels {
		t.Error("honorLabels: node-wide series would take pipesnap's own pod as theirs")
	}
	dropped := false
	for _, r := range e.Relabelings {
		if r.Action == "labeldrop" && r.Regex == "namespace|pod|container" {
			dropped = true
		}
	}
	if !dropped {
		t.Error("the target's namespace, pod and container labels are not dropped")
	}
}

func TestKustomization(t *testing.T) {
	var k kustomization
	decodeStrict(t, "kustomization.yaml", &k)
	want := []string{"daemonset.yaml", "namespace.yaml", "service.yaml"}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("resources %v, want %v (the ServiceMonitor needs the operator's CRD: applied on its own)", k.Resources, want)
	}
	for _, r := range k.Resources {
		if _, err := os.Stat(filepath.Join(manifests, r)); err != nil {
			t.Error(err)
		}
	}
}

// TestContainerfile: an empty base, nothing run, the binary copied in.
func TestContainerfile(t *testing.T) {
	b, err := os.ReadFile("image/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var from, copies []string
	var entry string
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			from = append(from, strings.Join(f[1:], " "))
		case "RUN", "ADD":
			t.Errorf("%s: the image builds nothing and fetches nothing", line)
		case "COPY":
			copies = append(copies, strings.Join(f[1:], " "))
		case "ENTRYPOINT":
			entry = strings.Join(f[1:], " ")
		}
	}
	if !slices.Equal(from, []string{"scratch"}) {
		t.Errorf("FROM %v, want scratch alone", from)
	}
	if !slices.Equal(copies, []string{"pipesnap /pipesnap"}) {
		t.Errorf("COPY %v", copies)
	}
	if entry != `["/pipesnap"]` {
		t.Errorf("ENTRYPOINT %s", entry)
	}
}
