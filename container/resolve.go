package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Names are what the runtime calls a container.
type Names struct {
	// Name is the runtime's name of the container: docker's and
	// podman's name (without docker's leading /), the CRI metadata name
	// (the Kubernetes container name).
	Name string `json:"name,omitempty"`
	// Pod, Namespace and Container are the Kubernetes pod name,
	// namespace and container name, under Kubernetes only.
	Pod       string `json:"pod,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Container string `json:"container,omitempty"`
	// Source says where the names came from: "cri /run/containerd/containerd.sock",
	// "docker /run/docker.sock", "podman /run/podman/podman.sock",
	// "storage /var/lib/containers/storage" (paths as on the host).
	Source string `json:"source,omitempty"`
	// Note says why there are no names: the sources asked and what each
	// said ("podman /run/podman/podman.sock: not present"), or that the
	// id has no container.
	Note string `json:"note,omitempty"`
}

// Known reports whether any name was found.
func (n Names) Known() bool { return n.Name != "" || n.Pod != "" }

// Environment variables overriding the default sockets: a path or a
// unix:// URL, or several separated by commas. Each names the socket as on
// the host (Options.Root is prefixed).
const (
	EnvCRISocket  = "PIPESNAP_CRI_SOCKET"
	EnvDockerHost = "PIPESNAP_DOCKER_HOST"
	EnvPodmanHost = "PIPESNAP_PODMAN_HOST"
	// EnvHostRoot is Options.Root where that is "": the host's root as
	// mounted in pipesnap's container (the DaemonSet sets /host).
	EnvHostRoot = "PIPESNAP_HOST_ROOT"
)

// Default sockets and storage, as on the host. A "*" stands for each user's
// /run/user/UID of the rootless runtimes. The /var/run forms come after
// the /run ones: /var/run is a symlink to /run, which under Options.Root
// would point at the reader's own /run.
var (
	DefaultCRISockets    = []string{"/run/containerd/containerd.sock", "/run/crio/crio.sock", "/run/k3s/containerd/containerd.sock", "/var/run/containerd/containerd.sock", "/var/run/crio/crio.sock"}
	DefaultDockerSockets = []string{"/run/docker.sock", "/var/run/docker.sock", "/run/user/*/docker.sock"}
	DefaultPodmanSockets = []string{"/run/podman/podman.sock", "/run/user/*/podman/podman.sock"}
	DefaultStorage       = []string{"/var/lib/containers/storage"}
)

// Options configure a Resolver. Nil socket lists take the environment
// variable, else the defaults; an empty non-nil list turns a kind off.
type Options struct {
	// Root is prefixed to every path (the host's root as mounted in
	// pipesnap's container, "/host"); "" takes $PIPESNAP_HOST_ROOT, and
	// where that is unset too, the paths are the host's own.
	Root string
	// Timeout bounds one Resolve or ResolveAll call (default 300 ms).
	Timeout time.Duration
	// Retry is how long a source that failed, or an id no source knew,
	// is left before being asked again (default 10 s).
	Retry time.Duration

	CRISockets    []string // containerd, CRI-O and other CRI runtimes
	DockerSockets []string // the docker Engine API
	PodmanSockets []string // podman's docker-compatible API
	Storage       []string // containers/storage roots (podman, CRI-O)
}

// Resolver names containers from their runtimes; safe for concurrent use.
//
// Clients, and why:
//   - CRI (containerd, CRI-O): the runtime.v1 RuntimeService kubelet and
//     crictl use, the only stable API both runtimes serve, and it carries
//     the Kubernetes labels (io.kubernetes.pod.name, .pod.namespace,
//     .container.name). One ListContainers answers for every container of
//     the node; cri.go speaks that one call over net/http's HTTP/2 (gRPC's
//     generated client costs every run ~1 ms of inits).
//   - Docker and podman: their Engine API is plain HTTP and JSON over a
//     unix socket, and this package needs one call of it
//     (GET /containers/json?all=1, which podman's docker-compatible
//     service answers too), so it speaks it with net/http rather than
//     github.com/docker/docker/client (v28), which brings in 28 more
//     modules (OpenTelemetry, the OCI image specs, containerd's errdefs
//     and log) and 4 MB of binary for that one call.
//   - Podman without its service (`podman system service` runs on
//     demand, often not at all): the containers.json of
//     containers/storage (/var/lib/containers/storage), which podman
//     and CRI-O keep of every container with its names; read as a file,
//     no process is started (`podman inspect` would cost a fork and
//     podman's own start-up on every miss, and is absent in pipesnap's
//     image).
//
// The cost is kept off the fast path: each source is listed at most once
// a second and a container's names are kept once found, so a container id
// costs one map look-up after its first. No call stalls: every
// Resolve/ResolveAll returns within Options.Timeout (default 300 ms), with
// the ids alone and a Note naming the sockets that did not answer; a source
// that failed or timed out is not asked again for Options.Retry (10 s).
type Resolver struct {
	timeout, retry time.Duration
	sources        []*source

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	names Names
	at    time.Time // when an unknown id was last looked for
}

// maxCache bounds the names kept: past it, the cache starts anew.
const maxCache = 8192

// minRelist is how often a source is listed again at most.
const minRelist = time.Second

// NewResolver makes a Resolver; it connects to nothing until asked.
func NewResolver(opts Options) *Resolver {
	r := &Resolver{timeout: opts.Timeout, retry: opts.Retry, cache: map[string]cached{}}
	if opts.Root == "" {
		opts.Root = os.Getenv(EnvHostRoot)
	}
	if r.timeout <= 0 {
		r.timeout = 300 * time.Millisecond
	}
	if r.retry <= 0 {
		r.retry = 10 * time.Second
	}
	pick := func(given []string, env string, def []string) []string {
		if given != nil {
			return given
		}
		if v := os.Getenv(env); v != "" {
			var out []string
			for p := range strings.SplitSeq(v, ",") {
				if p = strings.TrimPrefix(strings.TrimSpace(p), "unix://"); p != "" {
					out = append(out, p)
				}
			}
			return out
		}
		return def
	}
	add := func(kind string, paths []string, runtimes ...string) {
		for _, p := range paths {
			// CRI sockets serve their own runtime first; one given by
			// the user may be either.
			rts := runtimes
			if kind == "cri" {
				switch {
				case strings.Contains(p, "containerd"):
					rts = []string{Containerd}
				case strings.Contains(p, "crio"):
					rts = []string{CRIO}
				}
			}
			r.sources = append(r.sources, &source{kind: kind, pattern: p, root: opts.Root, runtimes: rts})
		}
	}
	add("cri", pick(opts.CRISockets, EnvCRISocket, DefaultCRISockets), Containerd, CRIO)
	add("docker", pick(opts.DockerSockets, EnvDockerHost, DefaultDockerSockets), Docker)
	add("podman", pick(opts.PodmanSockets, EnvPodmanHost, DefaultPodmanSockets), Podman)
	storage := opts.Storage
	if storage == nil {
		storage = DefaultStorage
	}
	add("storage", storage, Podman, CRIO)
	return r
}

// Close closes the runtime connections.
func (r *Resolver) Close() error {
	for _, s := range r.sources {
		s.close()
	}
	return nil
}

// Resolve names the container of id (within Options.Timeout); an id with
// no ContainerID has no names.
func (r *Resolver) Resolve(ctx context.Context, id Identity) Names {
	return r.ResolveAll(ctx, []Identity{id})[id.ContainerID]
}

// ResolveAll names the containers of ids at once (within Options.Timeout
// in all), keyed by ContainerID; ids without one are left out.
func (r *Resolver) ResolveAll(ctx context.Context, ids []Identity) map[string]Names {
	out := map[string]Names{}
	now := time.Now()
	var todo []Identity
	r.mu.Lock()
	for _, id := range ids {
		if id.ContainerID == "" {
			continue
		}
		if _, done := out[id.ContainerID]; done {
			continue
		}
		if c, ok := r.cache[id.ContainerID]; ok && (c.names.Known() || now.Sub(c.at) < r.retry) {
			out[id.ContainerID] = c.names
			continue
		}
		out[id.ContainerID] = Names{}
		todo = append(todo, id)
	}
	r.mu.Unlock()
	// Those a listing already holds need no new one.
	todo = slices.DeleteFunc(todo, func(id Identity) bool {
		for _, s := range r.candidates(id) {
			if n, found, _ := s.lookup(id.ContainerID); found {
				out[id.ContainerID] = n
				r.remember(id.ContainerID, n)
				return true
			}
		}
		return false
	})
	if len(todo) == 0 {
		return out
	}

	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	// The sources any id needs, listed at once.
	var need []*source
	for _, id := range todo {
		for _, s := range r.candidates(id) {
			if !slices.Contains(need, s) {
				need = append(need, s)
			}
		}
	}
	var wg sync.WaitGroup
	for _, s := range need {
		wg.Go(func() { s.refresh(ctx, r.timeout, r.retry) })
	}
	wg.Wait()

	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) > maxCache {
		r.cache = map[string]cached{}
	}
	for _, id := range todo {
		var notes []string
		var names Names
		for _, s := range r.candidates(id) {
			n, found, note := s.lookup(id.ContainerID)
			if found {
				names = n
				break
			}
			notes = append(notes, note)
		}
		if !names.Known() {
			if len(notes) == 0 {
				notes = append(notes, "no runtime source configured")
			}
			names = Names{Note: "names unknown: " + strings.Join(notes, "; ")}
		}
		out[id.ContainerID] = names
		r.cache[id.ContainerID] = cached{names: names, at: time.Now()}
	}
	return out
}

// remember caches the names of container id.
func (r *Resolver) remember(id string, n Names) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) > maxCache {
		r.cache = map[string]cached{}
	}
	r.cache[id] = cached{names: n, at: time.Now()}
}

// candidates are the sources to ask for id: those of its runtime first,
// then, for an id whose runtime the path does not tell for sure (no
// runtime at all, or a bare id under the cgroupfs kubelet driver's
// kubepods, which containerd and cri-dockerd both write), every other
// source.
func (r *Resolver) candidates(id Identity) []*source {
	var first, rest []*source
	for _, s := range r.sources {
		if slices.Contains(s.runtimes, id.Runtime) {
			first = append(first, s)
		} else {
			rest = append(rest, s)
		}
	}
	// A rootless runtime's socket is that of the user in the path
	// (user@UID.service): that one first.
	if m := userRe.FindStringSubmatch(id.Path); m != nil {
		slices.SortStableFunc(first, func(a, b *source) int {
			return boolCmp(b.forUser(m[1]), a.forUser(m[1]))
		})
	}
	if id.Runtime == "" || (id.PodUID != "" && id.Unit == "") {
		first = append(first, rest...)
	}
	return first
}

var userRe = regexp.MustCompile(`/user@([0-9]+)\.service/`)

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// source is one socket (or storage root) and what it last listed.
type source struct {
	kind     string // "cri", "docker", "podman", "storage"
	pattern  string // as on the host; may hold a * (rootless users)
	root     string
	runtimes []string

	mu       sync.Mutex
	listing  chan struct{}           // closed when the listing under way is done
	listed   time.Time               // when last listed (successfully)
	failedAt time.Time               // when it last failed
	err      error                   // why it last failed
	byID     map[string]Names        // the last listing
	conns    map[string]*http.Client // CRI sockets' connections
}

func (s *source) forUser(uid string) bool {
	return strings.Contains(s.pattern, "*") || strings.Contains(s.pattern, "/run/user/"+uid+"/")
}

func (s *source) String() string { return s.kind + " " + s.pattern }

// refresh lists the source unless it was listed under minRelist ago or
// failed under retry ago; the listing runs bounded by timeout on its own
// and refresh waits for it until ctx is done.
func (s *source) refresh(ctx context.Context, timeout, retry time.Duration) {
	s.mu.Lock()
	now := time.Now()
	if now.Sub(s.listed) < minRelist || (s.err != nil && now.Sub(s.failedAt) < retry) {
		s.mu.Unlock()
		return
	}
	if s.listing == nil {
		done := make(chan struct{})
		s.listing = done
		go func() {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
			defer cancel()
			byID, err := s.list(lctx)
			s.mu.Lock()
			if err != nil {
				if lctx.Err() != nil {
					err = fmt.Errorf("no answer in %v", timeout)
				}
				s.err, s.failedAt = err, time.Now()
			} else {
				s.err, s.byID, s.listed = nil, byID, time.Now()
			}
			s.listing = nil
			s.mu.Unlock()
			close(done)
		}()
	}
	done := s.listing
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		if s.err == nil && s.byID == nil {
			// Said to the callers that gave up waiting; the listing
			// under way sets its own outcome.
			s.err, s.failedAt = fmt.Errorf("no answer in %v", timeout), time.Now()
		}
		s.mu.Unlock()
	}
}

// lookup is what the last listing says of id, or a note on why nothing.
func (s *source) lookup(id string) (Names, bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.byID[id]; ok {
		return n, true, ""
	}
	switch {
	case s.err != nil:
		return Names{}, false, fmt.Sprintf("%s: %v", s, s.err)
	case s.byID == nil:
		return Names{}, false, fmt.Sprintf("%s: no answer yet", s)
	}
	return Names{}, false, fmt.Sprintf("%s: no such container", s)
}

// errAbsent says that no socket or storage is at the path.
var errAbsent = errors.New("not present")

// paths are the source's paths under root, the rootless pattern expanded.
func (s *source) paths() ([]string, error) {
	p := filepath.Join(s.root, s.pattern)
	if !strings.Contains(s.pattern, "*") {
		if _, err := os.Stat(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, errAbsent
			}
			return nil, err
		}
		return []string{p}, nil
	}
	m, err := filepath.Glob(p)
	if err != nil || len(m) == 0 {
		return nil, errAbsent
	}
	return m, nil
}

// list asks the source for every container it knows.
func (s *source) list(ctx context.Context) (map[string]Names, error) {
	paths, err := s.paths()
	if err != nil {
		return nil, err
	}
	out := map[string]Names{}
	var errs []error
	for _, p := range paths {
		var err error
		switch s.kind {
		case "cri":
			err = s.listCRI(ctx, p, out)
		case "docker", "podman":
			err = listEngine(ctx, p, s.hostPath(p), s.kind, out)
		case "storage":
			err = listStorage(p, s.hostPath(p), out)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(paths) {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// hostPath is p as on the host (without the root prefix).
func (s *source) hostPath(p string) string {
	if s.root == "" {
		return p
	}
	if rel, err := filepath.Rel(s.root, p); err == nil && !strings.HasPrefix(rel, "..") {
		return "/" + rel
	}
	return p
}

func (s *source) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.CloseIdleConnections()
	}
	s.conns = nil
}

// Kubernetes' labels on the containers it makes.
const (
	labelPod       = "io.kubernetes.pod.name"
	labelNamespace = "io.kubernetes.pod.namespace"
	labelContainer = "io.kubernetes.container.name"
)

// listCRI lists a CRI runtime's containers.
func (s *source) listCRI(ctx context.Context, path string, out map[string]Names) error {
	s.mu.Lock()
	client := s.conns[path]
	if client == nil {
		client = criClient(path)
		if s.conns == nil {
			s.conns = map[string]*http.Client{}
		}
		s.conns[path] = client
	}
	s.mu.Unlock()
	msg, err := criCall(ctx, client, criListContainers)
	if err == nil {
		var cs []criContainer
		if cs, err = decodeListContainers(msg); err == nil {
			src := "cri " + s.hostPath(path)
			for _, c := range cs {
				n := Names{Name: c.name, Source: src}
				n.Pod, n.Namespace, n.Container = c.labels[labelPod], c.labels[labelNamespace], c.labels[labelContainer]
				if n.Pod != "" && n.Container == "" {
					n.Container = n.Name
				}
				out[c.id] = n
			}
			return nil
		}
	}
	var ce *criError
	if errors.As(err, &ce) {
		switch ce.code {
		case grpcUnavailable:
			return fmt.Errorf("not reachable: %s", ce.msg)
		case grpcDeadlineExceeded, grpcCanceled:
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return err
}

// maxBody bounds a runtime's answer.
const maxBody = 64 << 20

// listEngine lists the containers of a docker Engine API (docker's, or
// podman's docker-compatible one).
func listEngine(ctx context.Context, path, hostPath, kind string, out map[string]Names) error {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost/containers/json?all=1", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return fmt.Errorf("not reachable: %w", ne.Err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	var list []struct {
		ID     string            `json:"Id"`
		Names  []string          `json:"Names"`
		Labels map[string]string `json:"Labels"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&list); err != nil {
		return fmt.Errorf("decoding the container list: %w", err)
	}
	src := kind + " " + hostPath
	for _, c := range list {
		n := Names{Source: src}
		if len(c.Names) > 0 {
			n.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		n.Pod, n.Namespace, n.Container = c.Labels[labelPod], c.Labels[labelNamespace], c.Labels[labelContainer]
		if n.Pod == "" {
			kubeName(&n)
		}
		out[c.ID] = n
	}
	return nil
}

// kubeName reads the Kubernetes names from a container name of the form
// dockershim, cri-dockerd and CRI-O's storage give them:
// k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt> (none of the
// names may hold an underscore).
func kubeName(n *Names) {
	f := strings.Split(n.Name, "_")
	if len(f) == 6 && f[0] == "k8s" && f[1] != "" && f[2] != "" && f[3] != "" {
		n.Container, n.Pod, n.Namespace = f[1], f[2], f[3]
	}
}

// listStorage reads the containers of a containers/storage root: each
// graph driver's <driver>-containers/containers.json.
func listStorage(root, hostRoot string, out map[string]Names) error {
	files, _ := filepath.Glob(filepath.Join(root, "*-containers", "containers.json"))
	if len(files) == 0 {
		return errAbsent
	}
	var errs []error
	for _, f := range files {
		b, err := readLimited(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var list []struct {
			ID    string   `json:"id"`
			Names []string `json:"names"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
			continue
		}
		for _, c := range list {
			n := Names{Source: "storage " + hostRoot}
			if len(c.Names) > 0 {
				n.Name = c.Names[0]
			}
			kubeName(&n)
			out[c.ID] = n
		}
	}
	if len(errs) == len(files) {
		return errors.Join(errs...)
	}
	return nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxBody))
}
