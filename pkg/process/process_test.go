package process

import (
	"maps"
	"testing"
)

func TestFeatureGates(t *testing.T) {
	got, err := FeatureGates([]string{"max-pods=50", "feature-gates=A=true,B=false", "--feature-gates=B=true"})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"A": true, "B": true}; !maps.Equal(got, want) {
		t.Errorf("FeatureGates = %v, want %v", got, want)
	}
	if _, err := FeatureGates([]string{"feature-gates=A=maybe"}); err == nil {
		t.Error("feature-gates=A=maybe accepted")
	}
	if got, _ := FeatureGates(nil); len(got) != 0 {
		t.Errorf("FeatureGates(nil) = %v", got)
	}
}

func TestDefaultGatesYieldToUser(t *testing.T) {
	if got := defaultGates(nil); got["APIServerIdentity"] {
		t.Fatalf("APIServerIdentity should default off: %v", got)
	}
	if got := defaultGates(map[string]bool{"APIServerIdentity": true, "UnknownVersionInteroperabilityProxy": true}); len(got) != 0 {
		t.Fatalf("a gate the user set was overridden: %v", got)
	}
}
