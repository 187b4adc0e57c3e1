package container

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI is a CRI runtime service answering ListContainers, on a unix socket.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	containers []*runtimeapi.Container
	err        error // answered instead, when set
	calls      atomic.Int32
}

func (f *fakeCRI) ListContainers(context.Context, *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f.calls.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	return &runtimeapi.ListContainersResponse{Containers: f.containers}, nil
}

func serveCRI(t *testing.T, path string, f *fakeCRI) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
}

// engineContainer is one entry of GET /containers/json.
type engineContainer struct {
	ID     string            `json:"Id"`
	Names  []string          `json:"Names"`
	Labels map[string]string `json:"Labels"`
}

// serveEngine serves a docker Engine API's container list on a unix socket.
func serveEngine(t *testing.T, path string, list []engineContainer) *atomic.Int32 {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containers/json", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.URL.Query().Get("all") != "1" {
			http.Error(w, "want all=1", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(list)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return &calls
}

// serveSilent accepts connections on a unix socket and never answers: a
// runtime that hangs.
func serveSilent(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
}

// none turns a source kind off.
var none = []string{}

func TestResolveCRI(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	cri := &fakeCRI{containers: []*runtimeapi.Container{{
		Id:       id1,
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Labels:   map[string]string{labelPod: "web-0", labelNamespace: "shop", labelContainer: "app", "io.kubernetes.pod.uid": uid},
	}, {
		Id:       id2,
		Metadata: &runtimeapi.ContainerMetadata{Name: "plain"},
	}}}
	serveCRI(t, sock, cri)
	r := NewResolver(Options{CRISockets: []string{sock}, DockerSockets: none, PodmanSockets: none, Storage: none})
	defer r.Close()
	id := Parse("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/cri-containerd-" + id1 + ".scope")
	want := Names{Name: "app", Pod: "web-0", Namespace: "shop", Container: "app", Source: "cri " + sock}
	if got := r.Resolve(context.Background(), id); got != want {
		t.Fatalf("Resolve = %+v, want %+v", got, want)
	}
	// Once per container: the second time costs no call.
	if got := r.Resolve(context.Background(), id); got != want {
		t.Fatalf("Resolve again = %+v, want %+v", got, want)
	}
	if n := cri.calls.Load(); n != 1 {
		t.Errorf("ListContainers called %d times, want 1", n)
	}
	// A container outside Kubernetes: its name alone. It came with the
	// first listing: no new call.
	got := r.ResolveAll(context.Background(), []Identity{Parse("/default/" + id2), id, {Runtime: Systemd, Unit: "ssh.service"}})
	if len(got) != 2 || got[id2] != (Names{Name: "plain", Source: "cri " + sock}) || got[id1] != want {
		t.Errorf("ResolveAll = %+v", got)
	}
	if n := cri.calls.Load(); n != 1 {
		t.Errorf("ListContainers called %d times, want 1", n)
	}
	// An id the runtime does not know: a note, and no second listing for
	// it within Retry.
	unknown := Parse("/default/" + strings.Repeat("ab", 32))
	time.Sleep(minRelist)
	n := r.Resolve(context.Background(), unknown)
	if n.Known() || n.Note != "names unknown: cri "+sock+": no such container" {
		t.Errorf("unknown id: %+v", n)
	}
	r.Resolve(context.Background(), unknown)
	if n := cri.calls.Load(); n != 2 {
		t.Errorf("ListContainers called %d times, want 2", n)
	}
}

// TestResolveCRIWire: the hand-made client against grpc's own server, with
// every field of a Container set (the ones not read are skipped), many
// containers, and statuses other than OK.
func TestResolveCRIWire(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	var cs []*runtimeapi.Container
	for i := range 2000 {
		id := fmt.Sprintf("%064x", i+1)
		cs = append(cs, &runtimeapi.Container{
			Id:           id,
			PodSandboxId: strings.Repeat("f", 64),
			Metadata:     &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("c%d", i), Attempt: 3},
			Image:        &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:latest", Annotations: map[string]string{"a": "b"}},
			ImageRef:     "sha256:" + strings.Repeat("e", 64),
			State:        runtimeapi.ContainerState_CONTAINER_RUNNING,
			CreatedAt:    -1,
			Labels:       map[string]string{labelPod: fmt.Sprintf("web-%d", i), labelNamespace: "shop", labelContainer: "app", "x": strings.Repeat("y", 300)},
			Annotations:  map[string]string{"io.kubernetes.container.hash": "1234", labelPod: "not-this-one"},
		})
	}
	cri := &fakeCRI{containers: cs}
	serveCRI(t, sock, cri)
	r := NewResolver(Options{CRISockets: []string{sock}, DockerSockets: none, PodmanSockets: none, Storage: none})
	defer r.Close()
	want := Names{Name: "c1999", Pod: "web-1999", Namespace: "shop", Container: "app", Source: "cri " + sock}
	if got := r.Resolve(context.Background(), Identity{ContainerID: fmt.Sprintf("%064x", 2000)}); got != want {
		t.Fatalf("Resolve = %+v, want %+v", got, want)
	}

	for _, tc := range []struct {
		err  error
		note string
	}{
		{status.Error(codes.PermissionDenied, "not for you"), ": PermissionDenied: not for you"},
		{status.Error(codes.Unavailable, "shutting down"), ": not reachable: shutting down"},
		{status.Error(codes.Unimplemented, "no such method"), ": Unimplemented: no such method"},
	} {
		sock := filepath.Join(t.TempDir(), "crio.sock")
		tc.note = "cri " + sock + tc.note
		serveCRI(t, sock, &fakeCRI{err: tc.err})
		r := NewResolver(Options{CRISockets: []string{sock}, DockerSockets: none, PodmanSockets: none, Storage: none})
		n := r.Resolve(context.Background(), Identity{ContainerID: id1})
		r.Close()
		if n.Known() || !strings.Contains(n.Note, tc.note) {
			t.Errorf("%v: note %q, want %q", tc.err, n.Note, tc.note)
		}
	}
}

func TestDecodeListContainersMalformed(t *testing.T) {
	for _, b := range [][]byte{
		{0x0a},                   // a length missing
		{0x0a, 0x05, 0x01},       // longer than the message
		{0x0b},                   // wire type 3 (groups)
		{0x0a, 0x02, 0x42, 0x7f}, // a label entry longer than its container
	} {
		if _, err := decodeListContainers(b); err == nil {
			t.Errorf("%x: no error", b)
		}
	}
}

func TestResolveEngine(t *testing.T) {
	dir := t.TempDir()
	docker, podman := filepath.Join(dir, "docker.sock"), filepath.Join(dir, "podman.sock")
	dcalls := serveEngine(t, docker, []engineContainer{
		{ID: id1, Names: []string{"/web"}},
		// cri-dockerd: Kubernetes' labels
		{ID: id2, Names: []string{"/k8s_app_web-0_shop_" + uid + "_0"}, Labels: map[string]string{labelPod: "web-0", labelNamespace: "shop", labelContainer: "app"}},
	})
	pid := strings.Repeat("cd", 32)
	pcalls := serveEngine(t, podman, []engineContainer{{ID: pid, Names: []string{"x1"}}})
	r := NewResolver(Options{CRISockets: none, DockerSockets: []string{docker}, PodmanSockets: []string{podman}, Storage: none})
	defer r.Close()
	got := r.ResolveAll(context.Background(), []Identity{
		Parse("/system.slice/docker-" + id1 + ".scope"),
		Parse("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidU + ".slice/docker-" + id2 + ".scope"),
		Parse("/libpod_parent/libpod-" + pid),
	})
	want := map[string]Names{
		id1: {Name: "web", Source: "docker " + docker},
		id2: {Name: "k8s_app_web-0_shop_" + uid + "_0", Pod: "web-0", Namespace: "shop", Container: "app", Source: "docker " + docker},
		pid: {Name: "x1", Source: "podman " + podman},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %+v, want %+v", k[:12], got[k], w)
		}
	}
	if dcalls.Load() != 1 || pcalls.Load() != 1 {
		t.Errorf("docker listed %d times, podman %d, want 1 each", dcalls.Load(), pcalls.Load())
	}
}

func TestKubeName(t *testing.T) {
	for _, tt := range []struct {
		name string
		want Names
	}{
		{"k8s_app_web-0_shop_" + uid + "_3", Names{Container: "app", Pod: "web-0", Namespace: "shop"}},
		{"k8s_POD_web-0_shop_" + uid + "_0", Names{Container: "POD", Pod: "web-0", Namespace: "shop"}},
		{"x1", Names{}},
		{"k8s_a_b", Names{}},
	} {
		n := Names{Name: tt.name}
		kubeName(&n)
		tt.want.Name = tt.name
		if n != tt.want {
			t.Errorf("kubeName(%q) = %+v, want %+v", tt.name, n, tt.want)
		}
	}
}

// writeStorage writes a containers/storage containers.json under root.
func writeStorage(t *testing.T, root string, entries string) {
	t.Helper()
	d := filepath.Join(root, "overlay-containers")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "containers.json"), []byte(entries), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestResolveStorageUnderRoot(t *testing.T) {
	t.Run("env", func(t *testing.T) { testStorageUnderRoot(t, true) })
	t.Run("option", func(t *testing.T) { testStorageUnderRoot(t, false) })
}

func testStorageUnderRoot(t *testing.T, env bool) {
	host := t.TempDir() // the host's root, as mounted in pipesnap's container
	crio := strings.Repeat("ef", 32)
	// The shape podman writes (measured), and CRI-O's k8s_ names.
	writeStorage(t, filepath.Join(host, "var/lib/containers/storage"), `[
{"id":"`+id2+`","names":["x1"],"image":"27cef641","layer":"49dc786c","metadata":"{\"image-name\":\"localhost/bbtest:1\",\"name\":\"x1\"}","created":"2026-12-01T20:46:23.161210554Z","flags":{"MountLabel":"","ProcessLabel":""}},
{"id":"`+crio+`","names":["k8s_app_web-0_shop_`+uid+`_0"]}]`)
	// The defaults, every one under Root: only the storage is there.
	opts := Options{Root: host}
	if env {
		t.Setenv(EnvHostRoot, host)
		opts.Root = ""
	}
	r := NewResolver(opts)
	defer r.Close()
	got := r.ResolveAll(context.Background(), []Identity{
		Parse("/libpod_parent/libpod-" + id2),
		Parse("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidU + ".slice/crio-" + crio + ".scope"),
	})
	if w := (Names{Name: "x1", Source: "storage /var/lib/containers/storage"}); got[id2] != w {
		t.Errorf("podman: %+v, want %+v", got[id2], w)
	}
	if w := (Names{Name: "k8s_app_web-0_shop_" + uid + "_0", Pod: "web-0", Namespace: "shop", Container: "app", Source: "storage /var/lib/containers/storage"}); got[crio] != w {
		t.Errorf("cri-o: %+v, want %+v", got[crio], w)
	}
}

// TestResolveAbsent: no runtime anywhere: ids only, at once, with a note
// naming the sockets tried.
func TestResolveAbsent(t *testing.T) {
	r := NewResolver(Options{Root: t.TempDir()})
	defer r.Close()
	start := time.Now()
	n := r.Resolve(context.Background(), Parse("/libpod_parent/libpod-"+id2))
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("took %v with no runtime at all", d)
	}
	if n.Known() {
		t.Fatalf("names with no runtime: %+v", n)
	}
	for _, want := range []string{"names unknown", "podman /run/podman/podman.sock: not present", "storage /var/lib/containers/storage: not present"} {
		if !strings.Contains(n.Note, want) {
			t.Errorf("note %q lacks %q", n.Note, want)
		}
	}
	// A runtime-less id asks every source.
	n = r.Resolve(context.Background(), Identity{ContainerID: id1})
	for _, want := range []string{"cri /run/containerd/containerd.sock: not present", "docker /run/docker.sock: not present"} {
		if !strings.Contains(n.Note, want) {
			t.Errorf("note %q lacks %q", n.Note, want)
		}
	}
	// No id, no names and no note.
	if n := r.Resolve(context.Background(), Identity{Runtime: Systemd, Unit: "ssh.service"}); n != (Names{}) {
		t.Errorf("no container: %+v", n)
	}
}

// TestResolveStale: a socket file nobody listens on.
func TestResolveStale(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	cri := filepath.Join(dir, "containerd.sock")
	l, err = net.Listen("unix", cri)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	r := NewResolver(Options{CRISockets: []string{cri}, DockerSockets: []string{sock}, PodmanSockets: none, Storage: none})
	defer r.Close()
	start := time.Now()
	n := r.Resolve(context.Background(), Identity{ContainerID: id1})
	if d := time.Since(start); d > 350*time.Millisecond {
		t.Errorf("took %v", d)
	}
	for _, want := range []string{"docker " + sock + ": not reachable", "cri " + cri + ": not reachable"} {
		if !strings.Contains(n.Note, want) {
			t.Errorf("note %q lacks %q", n.Note, want)
		}
	}
}

// TestResolveSlow: runtimes that accept and never answer cost one
// Timeout, then nothing while Retry lasts.
func TestResolveSlow(t *testing.T) {
	dir := t.TempDir()
	cri, docker := filepath.Join(dir, "containerd.sock"), filepath.Join(dir, "docker.sock")
	serveSilent(t, cri)
	serveSilent(t, docker)
	r := NewResolver(Options{Timeout: 200 * time.Millisecond, CRISockets: []string{cri}, DockerSockets: []string{docker}, PodmanSockets: none, Storage: none})
	defer r.Close()
	ids := []Identity{Parse("/default/" + id1), Parse("/docker/" + id2), {ContainerID: strings.Repeat("12", 32)}}
	start := time.Now()
	got := r.ResolveAll(context.Background(), ids)
	d := time.Since(start)
	if d < 150*time.Millisecond || d > 400*time.Millisecond {
		t.Errorf("took %v, want about the 200ms bound", d)
	}
	if len(got) != 3 {
		t.Fatalf("got %d ids, want 3", len(got))
	}
	for id, n := range got {
		if n.Known() || !strings.Contains(n.Note, "no answer in 200ms") {
			t.Errorf("%s: %+v", id[:12], n)
		}
	}
	if !strings.Contains(got[id1].Note, "cri "+cri) || !strings.Contains(got[id2].Note, "docker "+docker) {
		t.Errorf("notes do not name the sockets: %q, %q", got[id1].Note, got[id2].Note)
	}
	// Again, and with a new id: the sockets that hung are not asked
	// again yet.
	start = time.Now()
	n := r.Resolve(context.Background(), Parse("/docker/"+strings.Repeat("34", 32)))
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("second call took %v", d)
	}
	if !strings.Contains(n.Note, "no answer in 200ms") {
		t.Errorf("second note %q", n.Note)
	}
	// A caller's own deadline is kept too.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r2 := NewResolver(Options{Timeout: time.Second, CRISockets: []string{cri}, DockerSockets: none, PodmanSockets: none, Storage: none})
	defer r2.Close()
	start = time.Now()
	r2.Resolve(ctx, Parse("/default/"+id1))
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("with a 20ms deadline: took %v", d)
	}
}

func TestResolveEnv(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	serveCRI(t, sock, &fakeCRI{containers: []*runtimeapi.Container{{Id: id1, Metadata: &runtimeapi.ContainerMetadata{Name: "app"}}}})
	dsock := filepath.Join(dir, "d.sock")
	serveEngine(t, dsock, []engineContainer{{ID: id2, Names: []string{"/web"}}})
	t.Setenv(EnvCRISocket, "unix://"+sock)
	t.Setenv(EnvDockerHost, filepath.Join(dir, "absent.sock")+", unix://"+dsock)
	t.Setenv(EnvPodmanHost, filepath.Join(dir, "absent.sock"))
	r := NewResolver(Options{Storage: none})
	defer r.Close()
	got := r.ResolveAll(context.Background(), []Identity{Parse("/default/" + id1), Parse("/docker/" + id2)})
	if got[id1].Name != "app" || got[id2].Name != "web" {
		t.Errorf("ResolveAll = %+v", got)
	}
}
