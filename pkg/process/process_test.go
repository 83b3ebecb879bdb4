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
