package healthtest

import (
	"os"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestExampleApplication checks argocd/application.yaml: it installs charts/zeroflow with
// server-side apply, and (when ZEROFLOW_APP_VALUES names a file) writes its values there so that
// e2e/tests/chart (argocd_health_check_and_example_application) can render the chart with exactly
// the values the example uses.
func TestExampleApplication(t *testing.T) {
	raw, err := os.ReadFile("../application.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var app struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Source struct {
				Path string `json:"path"`
				Helm struct {
					ValuesObject map[string]any `json:"valuesObject"`
				} `json:"helm"`
			} `json:"source"`
			SyncPolicy struct {
				SyncOptions []string `json:"syncOptions"`
			} `json:"syncPolicy"`
			IgnoreDifferences []any `json:"ignoreDifferences"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &app); err != nil {
		t.Fatal(err)
	}
	if app.APIVersion != "argoproj.io/v1alpha1" || app.Kind != "Application" {
		t.Errorf("not an Argo CD Application: %s %s", app.APIVersion, app.Kind)
	}
	if app.Spec.Source.Path != "charts/zeroflow" {
		t.Errorf("source.path = %q, want charts/zeroflow", app.Spec.Source.Path)
	}
	ssa := false
	for _, o := range app.Spec.SyncPolicy.SyncOptions {
		ssa = ssa || o == "ServerSideApply=true"
	}
	if !ssa {
		t.Errorf("syncOptions %v lack ServerSideApply=true", app.Spec.SyncPolicy.SyncOptions)
	}
	if len(app.Spec.IgnoreDifferences) > 0 {
		t.Errorf("ignoreDifferences should not be needed: %v", app.Spec.IgnoreDifferences)
	}
	token, _ := app.Spec.Source.Helm.ValuesObject["gatewayToken"].(map[string]any)
	if s, _ := token["existingSecret"].(string); s == "" {
		t.Error("the example must reference an existing gateway token Secret (a generated one changes on every Argo CD render)")
	}
	if out := os.Getenv("ZEROFLOW_APP_VALUES"); out != "" {
		values, err := yaml.Marshal(app.Spec.Source.Helm.ValuesObject)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, values, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
