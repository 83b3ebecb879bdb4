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
	if got := defaultGates(map[string]bool{"APIServerIdentity": true, "UnknownVersionInteroperabilityProxy": true, "ControllerManagerReleaseLeaderElectionLockOnExit": false}); len(got) != 0 {
		t.Fatalf("a gate the user set was overridden: %v", got)
	}
}

func TestMemLimitFor(t *testing.T) {
	for ram, want := range map[uint64]int64{512 << 20: 192 << 20, 1 << 30: 256 << 20, 24 << 30: 1 << 30} {
		if got := memLimitFor(ram); got != want {
			t.Errorf("RAM %d MiB: limit %d MiB, want %d", ram>>20, got>>20, want>>20)
		}
	}
}
