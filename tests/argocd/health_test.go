// Runs every Argo CD health check under config/argocd/health against the cases of its
// health_test.yaml, the way Argo CD does: the script runs in gopher-lua (Argo CD's Lua
// interpreter) with the object in the global `obj`, and must return a table with
// `status` and `message`.
package argocd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

const healthRoot = "../../config/argocd/health"

// The health statuses Argo CD knows.
var knownStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true,
	"Missing": true, "Unknown": true,
}

type healthTest struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

// toLua converts a decoded JSON value into a Lua value, as Argo CD does for `obj`.
func toLua(l *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case map[string]interface{}:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []interface{}:
		t := l.NewTable()
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	default:
		panic(fmt.Sprintf("unexpected %T", v))
	}
}

// runHealth runs script on the object in objYAML and returns status and message.
func runHealth(script string, objYAML []byte) (string, string, error) {
	var obj map[string]interface{}
	if err := yaml.Unmarshal(objYAML, &obj); err != nil {
		return "", "", err
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	// The libraries Argo CD opens for a health check from argocd-cm without
	// useOpenLibs (util/lua/lua.go): package, base and table, plus a safe subset of os
	// that these scripts do not use. No string or math library.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	// Argo CD gives a script one second.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", l.Get(-1).Type())
	}
	status, ok := ret.RawGetString("status").(lua.LString)
	if !ok {
		return "", "", fmt.Errorf("hs.status is not a string")
	}
	message := ""
	if m, ok := ret.RawGetString("message").(lua.LString); ok {
		message = string(m)
	}
	return string(status), message, nil
}

func TestHealthChecks(t *testing.T) {
	scripts, err := filepath.Glob(filepath.Join(healthRoot, "*", "*", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) != 3 {
		t.Fatalf("want the health checks of 3 kinds, found %d: %v", len(scripts), scripts)
	}
	for _, script := range scripts {
		dir := filepath.Dir(script)
		kind := filepath.Base(dir)
		t.Run(kind, func(t *testing.T) {
			code, err := os.ReadFile(script)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var cases healthTest
			if err := yaml.UnmarshalStrict(raw, &cases); err != nil {
				t.Fatal(err)
			}
			if len(cases.Tests) == 0 {
				t.Fatal("health_test.yaml has no tests")
			}
			seen := map[string]bool{}
			used := map[string]bool{}
			for _, tc := range cases.Tests {
				used[filepath.Clean(tc.InputPath)] = true
				t.Run(tc.InputPath, func(t *testing.T) {
					input, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
					if err != nil {
						t.Fatal(err)
					}
					status, message, err := runHealth(string(code), input)
					if err != nil {
						t.Fatal(err)
					}
					if !knownStatuses[status] {
						t.Errorf("status %q is not an Argo CD health status", status)
					}
					if status != tc.HealthStatus.Status || message != tc.HealthStatus.Message {
						t.Errorf("got %s %q, want %s %q", status, message, tc.HealthStatus.Status, tc.HealthStatus.Message)
					}
					seen[status] = true
				})
			}
			// Every testdata file is a case.
			files, _ := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
			for _, f := range files {
				rel, _ := filepath.Rel(dir, f)
				if !used[rel] {
					t.Errorf("%s is not used by health_test.yaml", rel)
				}
			}
			// The states each kind has are all covered.
			want := []string{"Healthy", "Progressing", "Degraded"}
			if kind != "MaintenanceWindow" {
				want = append(want, "Suspended")
			}
			for _, s := range want {
				if !seen[s] {
					t.Errorf("no case expects %s", s)
				}
			}
		})
	}
}

// The runner itself must notice a wrong answer.
func TestRunnerDetectsMismatch(t *testing.T) {
	status, _, err := runHealth(`return {status = "Healthy", message = obj.metadata.name}`,
		[]byte("metadata: {name: x}"))
	if err != nil || status != "Healthy" {
		t.Fatalf("got %q, %v", status, err)
	}
	if _, _, err := runHealth(`return string.upper("x")`, []byte("{}")); err == nil {
		t.Fatal("Argo CD opens no string library for argocd-cm health checks; a script using it must fail here")
	}
}

const cmPatch = "../../config/argocd/argocd-cm-health-patch.yaml"

// cmPatchText renders the argocd-cm patch that installs every health check.
func cmPatchText(t *testing.T) (string, map[string]string) {
	scripts, err := filepath.Glob(filepath.Join(healthRoot, "*", "*", "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("# Generated from config/argocd/health/*/*/health.lua by tests/argocd\n")
	b.WriteString("# (UPDATE=1 go test -run TestArgoCDConfigMapPatch); do not edit. Install with:\n")
	b.WriteString("#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file config/argocd/argocd-cm-health-patch.yaml\n")
	b.WriteString("data:\n")
	want := map[string]string{}
	for _, script := range scripts {
		kind := filepath.Base(filepath.Dir(script))
		group := filepath.Base(filepath.Dir(filepath.Dir(script)))
		code, err := os.ReadFile(script)
		if err != nil {
			t.Fatal(err)
		}
		key := "resource.customizations.health." + group + "_" + kind
		want[key] = string(code)
		b.WriteString("  " + key + ": |\n")
		for _, line := range strings.Split(strings.TrimRight(string(code), "\n"), "\n") {
			if line == "" {
				b.WriteString("\n")
			} else {
				b.WriteString("    " + line + "\n")
			}
		}
	}
	return b.String(), want
}

// The committed argocd-cm patch is the health checks as they are, and parses back to them.
func TestArgoCDConfigMapPatch(t *testing.T) {
	text, want := cmPatchText(t)
	if os.Getenv("UPDATE") == "1" {
		if err := os.WriteFile(cmPatch, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(cmPatch)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != text {
		t.Fatalf("%s is out of date: run `cd tests/argocd && UPDATE=1 go test -run TestArgoCDConfigMapPatch`", cmPatch)
	}
	var parsed struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.UnmarshalStrict(got, &parsed); err != nil {
		t.Fatal(err)
	}
	if len(parsed.Data) != 3 {
		t.Fatalf("want 3 health checks in the patch, got %d", len(parsed.Data))
	}
	for k, v := range want {
		if parsed.Data[k] != v {
			t.Errorf("%s in the patch differs from its health.lua", k)
		}
	}
}
