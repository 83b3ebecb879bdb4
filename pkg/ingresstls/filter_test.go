package ingresstls

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/endpoints/request"
)

type labelSet map[string]bool

func (l labelSet) Labelled(ns, name string) bool { return l[ns+"/"+name] }

func TestFilter(t *testing.T) {
	f := NewFilter(TraefikUser)
	var seen *http.Request
	h := f.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r }))
	do := func(who, verb, resource, ns, name, query string) (int, string, *http.Request) {
		seen = nil
		r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/"+ns+"/"+resource+"/"+name+"?"+query, nil)
		ctx := request.WithUser(r.Context(), &user.DefaultInfo{Name: who})
		ctx = request.WithRequestInfo(ctx, &request.RequestInfo{IsResourceRequest: true, Verb: verb, APIVersion: "v1",
			Resource: resource, Namespace: ns, Name: name})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r.WithContext(ctx))
		return w.Code, w.Body.String(), seen
	}
	selector := func(r *http.Request) labels.Selector {
		t.Helper()
		s, err := labels.Parse(r.URL.Query().Get("labelSelector"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tls := labels.Set{Label: "true"}

	// Anyone else, and Traefik on other resources: untouched.
	if _, _, r := do("admin", "list", "secrets", "", "", ""); r == nil || r.URL.RawQuery != "" {
		t.Errorf("admin's list changed: %v", r)
	}
	if _, _, r := do(TraefikUser, "list", "services", "", "", ""); r == nil || r.URL.RawQuery != "" {
		t.Errorf("Traefik's list of services changed: %v", r)
	}

	// Traefik's list and watch get the label requirement, next to its own.
	_, _, r := do(TraefikUser, "list", "secrets", "", "", "")
	if r == nil || !selector(r).Matches(tls) || selector(r).Matches(labels.Set{}) {
		t.Fatalf("list: %v", r)
	}
	_, _, r = do(TraefikUser, "watch", "secrets", "web", "", "labelSelector=owner%21%3Dhelm&watch=true&resourceVersion=5")
	if r == nil || r.URL.Query().Get("watch") != "true" || r.URL.Query().Get("resourceVersion") != "5" {
		t.Fatalf("watch: %v", r)
	}
	if s := selector(r); !s.Matches(tls) || s.Matches(labels.Set{}) || s.Matches(labels.Set{Label: "true", "owner": "helm"}) {
		t.Errorf("watch selector %q", s)
	}
	// A selector cannot absorb the requirement, and a bad one is refused.
	if code, _, r := do(TraefikUser, "list", "secrets", "", "", "labelSelector=x+in+%28a"); code != http.StatusBadRequest || r != nil {
		t.Errorf("unclosed set selector: %d %v", code, r)
	}
	_, _, r = do(TraefikUser, "list", "secrets", "", "", "labelSelector=a%3Db&labelSelector=c%21%3Dd")
	if s := selector(r); s.Matches(labels.Set{"a": "b"}) || !s.Matches(labels.Set{"a": "b", Label: "true"}) || s.Matches(labels.Set{"a": "b", "c": "d", Label: "true"}) {
		t.Errorf("two selectors: %q", s)
	}

	// get: refused before the controller serves, then only labelled ones.
	if code, _, _ := do(TraefikUser, "get", "secrets", "web", "site-tls", ""); code != http.StatusForbidden {
		t.Errorf("get before Serve: %d", code)
	}
	f.Serve(labelSet{"web/site-tls": true})
	if code, _, r := do(TraefikUser, "get", "secrets", "web", "site-tls", ""); code != http.StatusOK || r == nil {
		t.Errorf("get of a labelled Secret: %d", code)
	}
	code, body, r := do(TraefikUser, "get", "secrets", "web", "db-password", "")
	var st metav1.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != http.StatusForbidden || r != nil ||
		st.Reason != metav1.StatusReasonForbidden || !strings.Contains(st.Message, `secrets "db-password" is forbidden`) {
		t.Errorf("get of another Secret: %d %s", code, body)
	}
	for _, verb := range []string{"create", "update", "patch", "delete", "deletecollection"} {
		if code, _, _ := do(TraefikUser, verb, "secrets", "web", "site-tls", ""); code != http.StatusForbidden {
			t.Errorf("%s: %d", verb, code)
		}
	}
}
