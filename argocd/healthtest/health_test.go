// Package healthtest runs the Argo CD health checks under ../resource_customizations the way
// Argo CD does: each health.lua is executed by gopher-lua (the Lua engine Argo CD embeds) with
// the resource as the global `obj`, against every case of the health_test.yaml next to it.
package healthtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

// Mirrors the layout of health_test.yaml in argoproj/argo-cd's resource_customizations.
type healthTests struct {
	Tests []struct {
		HealthStatus struct {
			Status  string `json:"status"`
			Message string `json:"message"`
		} `json:"healthStatus"`
		InputPath string `json:"inputPath"`
	} `json:"tests"`
}

var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

func TestHealthChecks(t *testing.T) {
	scripts, err := filepath.Glob("../resource_customizations/*/*/health.lua")
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatal("no health.lua found under ../resource_customizations")
	}
	sort.Strings(scripts)
	for _, script := range scripts {
		dir := filepath.Dir(script)
		name, _ := filepath.Rel("../resource_customizations", dir)
		t.Run(name, func(t *testing.T) { runCases(t, dir) })
	}
}

func runCases(t *testing.T, dir string) {
	source, err := os.ReadFile(filepath.Join(dir, "health.lua"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "health_test.yaml"))
	if err != nil {
		t.Fatalf("every health.lua needs a health_test.yaml: %v", err)
	}
	var cases healthTests
	if err := yaml.UnmarshalStrict(raw, &cases); err != nil {
		t.Fatalf("health_test.yaml: %v", err)
	}
	if len(cases.Tests) == 0 {
		t.Fatal("health_test.yaml has no tests")
	}
	// Every test data file must be used, so no case is silently dropped.
	unused := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
	for _, f := range files {
		unused[filepath.Base(f)] = true
	}
	for _, tc := range cases.Tests {
		tc := tc
		delete(unused, filepath.Base(tc.InputPath))
		t.Run(tc.InputPath, func(t *testing.T) {
			if !validStatuses[tc.HealthStatus.Status] {
				t.Fatalf("health_test.yaml expects an invalid status %q", tc.HealthStatus.Status)
			}
			input, err := os.ReadFile(filepath.Join(dir, tc.InputPath))
			if err != nil {
				t.Fatal(err)
			}
			var obj map[string]any
			if err := yaml.Unmarshal(input, &obj); err != nil {
				t.Fatalf("%s: %v", tc.InputPath, err)
			}
			status, message, err := runHealth(string(source), obj)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.HealthStatus.Status || message != tc.HealthStatus.Message {
				t.Errorf("got %s %q, want %s %q", status, message, tc.HealthStatus.Status, tc.HealthStatus.Message)
			}
		})
	}
	for f := range unused {
		t.Errorf("testdata/%s is not used by any case in health_test.yaml", f)
	}
}

// runHealth executes a health script as Argo CD does: a fresh state with only the base, table
// and string libraries, the object as the global `obj`, a one-second deadline, and a table with
// `status` and `message` as the result.
func runHealth(script string, obj map[string]any) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return "", "", err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", fmt.Errorf("running health.lua: %w", err)
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("health.lua returned %s, not a table", l.Get(-1).Type())
	}
	status, ok := result.RawGetString("status").(lua.LString)
	if !ok {
		return "", "", fmt.Errorf("health.lua returned no status")
	}
	message := ""
	if m, ok := result.RawGetString("message").(lua.LString); ok {
		message = string(m)
	}
	return string(status), message, nil
}

// toLua converts decoded JSON/YAML into Lua values the way Argo CD does: objects and arrays
// become tables (arrays 1-indexed), numbers become numbers, null becomes nil.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case map[string]any:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	case []any:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	default:
		panic(fmt.Sprintf("unexpected %T in decoded YAML", value))
	}
}
