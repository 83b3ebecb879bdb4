// Package ingresstls limits what the bundled Traefik can read of the
// cluster's Secrets to the TLS Secrets that Ingresses reference.
//
// Kubernetes RBAC cannot grant access to Secrets by label, and Traefik's
// Ingress provider watches every Secret of the namespaces it serves (with no
// option to narrow it). So Traefik keeps its get/list/watch grant, and:
//   - the Controller labels each Secret that an Ingress of the same namespace
//     names in spec.tls[].secretName and that holds tls.crt and tls.key
//     (Label=true), and removes the label from every other Secret;
//   - the Filter, in the apiserver's handler chain after authentication and
//     authorization, adds that label to the selector of Traefik's list and
//     watch requests on Secrets, and answers 403 to a get of an unlabelled
//     Secret or any other request of Traefik's on Secrets.
package ingresstls

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apiserver/pkg/endpoints/request"
)

// Label marks the Secrets Traefik may read; the Controller owns it.
const Label = "bramble.io/ingress-tls"

// Selector selects the Secrets Traefik may read.
const Selector = Label + "=true"

// TraefikUser is the identity of the bundled Traefik (its service account).
const TraefikUser = "system:serviceaccount:kube-system:traefik"

// LabelSource tells whether a Secret carries Label=true.
type LabelSource interface {
	Labelled(namespace, name string) bool
}

// Filter narrows one user's requests on Secrets to the labelled ones.
type Filter struct {
	user string

	mu  sync.RWMutex
	src LabelSource
}

// NewFilter returns a filter for user's requests. Until Serve gives it a
// LabelSource, a get of a Secret by user is refused.
func NewFilter(user string) *Filter { return &Filter{user: user} }

// Serve sets where gets of single Secrets are checked.
func (f *Filter) Serve(src LabelSource) {
	f.mu.Lock()
	f.src = src
	f.mu.Unlock()
}

func (f *Filter) labelled(namespace, name string) bool {
	f.mu.RLock()
	src := f.src
	f.mu.RUnlock()
	return src != nil && src.Labelled(namespace, name)
}

// Wrap puts the filter in front of next. It must run after the apiserver's
// authentication, impersonation and authorization filters (it reads the
// user and the request info they leave in the context).
func (f *Filter) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info, ok := request.RequestInfoFrom(r.Context())
		if !ok || !info.IsResourceRequest || info.APIGroup != "" || info.Resource != "secrets" {
			next.ServeHTTP(w, r)
			return
		}
		u, ok := request.UserFrom(r.Context())
		if !ok || u.GetName() != f.user {
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case info.Subresource != "":
			forbid(w, info.Name, "only get, list and watch of TLS Secrets that Ingresses reference are allowed")
		case info.Verb == "list" || info.Verb == "watch":
			r2, err := withSelector(r)
			if err != nil {
				writeStatus(w, apierrors.NewBadRequest(err.Error()).ErrStatus)
				return
			}
			next.ServeHTTP(w, r2)
		case info.Verb == "get" && f.labelled(info.Namespace, info.Name):
			next.ServeHTTP(w, r)
		case info.Verb == "get":
			forbid(w, info.Name, "it is not a TLS Secret referenced by an Ingress in its namespace (label "+Selector+", set by bramble)")
		default:
			forbid(w, info.Name, "only get, list and watch of TLS Secrets that Ingresses reference are allowed")
		}
	})
}

// required is the requirement every selector of the filtered user gets.
var required = func() labels.Requirement {
	r, err := labels.NewRequirement(Label, selection.Equals, []string{"true"})
	if err != nil {
		panic(err) // a constant label and value
	}
	return *r
}()

// withSelector returns r with the label requirement added to its label
// selector. Every labelSelector parameter given is kept (the apiserver
// would read only the first; requiring all of them can only select fewer).
// The selectors are parsed, not joined as text, so no selector can absorb
// the requirement.
func withSelector(r *http.Request) (*http.Request, error) {
	q := r.URL.Query()
	sel := labels.NewSelector()
	for _, s := range q["labelSelector"] {
		parsed, err := labels.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("labelSelector %q: %w", s, err)
		}
		reqs, _ := parsed.Requirements()
		sel = sel.Add(reqs...)
	}
	q.Set("labelSelector", sel.Add(required).String())
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	r2.RequestURI = r2.URL.RequestURI()
	return r2, nil
}

// forbid answers 403 with a Status the way the apiserver does.
func forbid(w http.ResponseWriter, name, why string) {
	writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, name, errors.New(why)).ErrStatus)
}

func writeStatus(w http.ResponseWriter, st metav1.Status) {
	st.Kind, st.APIVersion = "Status", "v1"
	body, _ := json.Marshal(st)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(int(st.Code))
	_, _ = w.Write(body)
}
