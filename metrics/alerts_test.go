package metrics

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The example alerting rules, deploy/prometheus/pipesnap-alerts.yml, and
// their unit tests, pipesnap-alerts_test.yml.
var (
	alertRules = filepath.Join("..", "deploy", "prometheus", "pipesnap-alerts.yml")
	alertTests = filepath.Join("..", "deploy", "prometheus", "pipesnap-alerts_test.yml")
)

// promtool finds promtool (Debian's prometheus package; scripts/deps.sh
// installs it): the test skips without it, except under CI.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool: %v, and CI is set: install it (scripts/deps.sh)", err)
		}
		t.Skipf("promtool: %v (scripts/deps.sh installs it)", err)
	}
	return p
}

func TestAlertRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", alertRules},
		{"test", "rules", alertTests},
	} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// described are the metrics a Collector exports, with their labels.
func described(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, d := range New(nil, Options{}).Descs() {
		out[d.Name] = d.Labels
	}
	return out
}

// TestAlertRulesNames keeps the rules and their tests in step with the
// collector: every pipesnap_ metric they name is exported, and the series
// the tests feed have the labels pipesnap gives them (and instance, job).
// promtool would pass rules over metrics that do not exist.
func TestAlertRulesNames(t *testing.T) {
	have := described(t)
	for _, file := range []string{alertRules, alertTests} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		names := regexp.MustCompile(`\bpipesnap_[a-z_]+\b`).FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Errorf("%s names no pipesnap metric", file)
		}
		for _, n := range names {
			if _, ok := have[n]; !ok {
				t.Errorf("%s: %s is no metric of pipesnap serve", file, n)
			}
		}
	}
	b, err := os.ReadFile(alertTests)
	if err != nil {
		t.Fatal(err)
	}
	series := regexp.MustCompile(`series: '(pipesnap_[a-z_]+)\{([^}]*)\}'`).FindAllStringSubmatch(string(b), -1)
	if len(series) == 0 {
		t.Fatal("no input series in the alert tests")
	}
	for _, s := range series {
		var labels []string
		for _, kv := range strings.Split(s[2], ",") {
			name, _, _ := strings.Cut(kv, "=")
			if name != "instance" && name != "job" {
				labels = append(labels, name)
			}
		}
		// The container labels are empty outside Kubernetes, and
		// Prometheus keeps no empty label: a series may lack them.
		var want []string
		for _, l := range have[s[1]] {
			if slices.Contains(labels, l) || !slices.Contains([]string{"namespace", "pod", "container"}, l) {
				want = append(want, l)
			}
		}
		slices.Sort(labels)
		slices.Sort(want)
		if !slices.Equal(labels, want) {
			t.Errorf("input series %s{%s}: labels %v, pipesnap exports %v", s[1], s[2], labels, have[s[1]])
		}
	}
}
