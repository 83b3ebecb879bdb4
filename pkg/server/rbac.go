package server

import (
	"context"
	"fmt"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bramble-pi/bramble/pkg/kubeconfig"
	"github.com/bramble-pi/bramble/pkg/nodecreds"
)

var managedBy = map[string]string{"app.kubernetes.io/managed-by": "bramble"}

// flannelOwnNode is the admission policy that keeps each node's flannel
// identity to its own Node, and there to flannel's annotations and the
// NetworkUnavailable condition. RBAC alone cannot: the Node authorizer
// knows kubelets, not flannel, and a ClusterRole covers every Node.
const flannelOwnNode = "bramble-flannel-own-node"

const flannelPrefix = "flannel.alpha.coreos.com/"

// annotationsKept is true when every annotation of from outside flannel's
// prefix is in to with the same value.
func annotationsKept(from, to string) string {
	return fmt.Sprintf("(!has(%[1]s.metadata.annotations) || %[1]s.metadata.annotations.all(k, k.startsWith('%[3]s') || "+
		"(has(%[2]s.metadata.annotations) && k in %[2]s.metadata.annotations && %[2]s.metadata.annotations[k] == %[1]s.metadata.annotations[k])))",
		from, to, flannelPrefix)
}

// unchanged is true when the optional field is the same in the old and the
// new object.
func unchanged(field string) string {
	return fmt.Sprintf("has(object.%[1]s) == has(oldObject.%[1]s) && (!has(object.%[1]s) || object.%[1]s == oldObject.%[1]s)", field)
}

// flannelRules are the CEL checks of flannelOwnNode, each with the message a
// refused request gets.
func flannelRules() []admissionv1.Validation {
	otherConditions := func(o string) string {
		return fmt.Sprintf("(has(%[1]s.status.conditions) ? %[1]s.status.conditions.filter(c, c.type != 'NetworkUnavailable') : [])", o)
	}
	rules := []admissionv1.Validation{
		{Expression: "request.userInfo.username == '" + nodecreds.FlannelUser("") + "' + object.metadata.name",
			Message: "a node's flannel may change only its own Node"},
		{Expression: unchanged("metadata.labels"), Message: "flannel may not change a Node's labels"},
		{Expression: "object.spec == oldObject.spec", Message: "flannel may not change a Node's spec"},
		{Expression: annotationsKept("oldObject", "object") + " && " + annotationsKept("object", "oldObject"),
			Message: "flannel may change only " + flannelPrefix + " annotations"},
		{Expression: otherConditions("object") + " == " + otherConditions("oldObject"),
			Message: "flannel may change only the NetworkUnavailable condition"},
	}
	for _, f := range []string{"addresses", "capacity", "allocatable", "daemonEndpoints", "nodeInfo"} {
		rules = append(rules, admissionv1.Validation{Expression: unchanged("status." + f), Message: "flannel may not change a Node's status." + f})
	}
	return rules
}

// bootstrapRBAC creates the roles and policies bramble's own components need.
func bootstrapRBAC(ctx context.Context, adminKubeconfig string) error {
	cs, err := kubeconfig.Clientset(adminKubeconfig, 0)
	if err != nil {
		return err
	}
	// Each node's flannel identity is also its network-policy controller's
	// (pkg/netpol): it reads the pods, namespaces and NetworkPolicies that
	// the rules are made of. The Node authorizer lets a kubelet list only
	// its own pods.
	flannel := access{name: nodecreds.FlannelGroup, group: nodecreds.FlannelGroup, rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"list", "watch"}},
	}, policy: flannelOwnNode, resources: []string{"nodes", "nodes/status"}, validations: flannelRules()}
	if err := flannel.apply(ctx, cs); err != nil {
		return err
	}
	return nodeVolumesAccess().apply(ctx, cs)
}

// access is a ClusterRole bound to a group, and an admission policy that
// narrows the group's updates of the resources to what validations allow.
type access struct {
	name, group string
	rules       []rbacv1.PolicyRule
	policy      string
	resources   []string // core API resources the policy checks on update
	validations []admissionv1.Validation
}

func (a access) apply(ctx context.Context, cs kubernetes.Interface) error {
	meta := metav1.ObjectMeta{Name: a.name, Labels: managedBy}
	role := &rbacv1.ClusterRole{ObjectMeta: meta, Rules: a.rules}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: meta,
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: a.group}},
	}
	fail := admissionv1.Fail
	policy := &admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: a.policy, Labels: managedBy},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{
					Operations: []admissionv1.OperationType{admissionv1.Update},
					Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: a.resources},
				}}}},
			MatchConditions: []admissionv1.MatchCondition{{Name: "group",
				Expression: "request.userInfo.groups.exists(g, g == '" + a.group + "')"}},
			Validations: a.validations,
		}}
	policyBinding := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: a.policy, Labels: managedBy},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: a.policy,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}}}

	if err := apply(ctx, cs.RbacV1().ClusterRoles(), role); err != nil {
		return err
	}
	if err := apply(ctx, cs.RbacV1().ClusterRoleBindings(), binding); err != nil {
		return err
	}
	if err := apply(ctx, cs.AdmissionregistrationV1().ValidatingAdmissionPolicies(), policy); err != nil {
		return err
	}
	return apply(ctx, cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings(), policyBinding)
}

// object is what apply needs of a typed object.
type object interface{ metav1.Object }

// client is the create/get/update subset of a typed cluster-scoped client.
type client[T object] interface {
	Create(context.Context, T, metav1.CreateOptions) (T, error)
	Get(context.Context, string, metav1.GetOptions) (T, error)
	Update(context.Context, T, metav1.UpdateOptions) (T, error)
}

// apply creates obj, or replaces an existing object of its name with it.
func apply[T object](ctx context.Context, c client[T], obj T) error {
	_, err := c.Create(ctx, obj, metav1.CreateOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %s: %w", obj.GetName(), err)
	}
	cur, err := c.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read %s: %w", obj.GetName(), err)
	}
	obj.SetResourceVersion(cur.GetResourceVersion())
	if _, err := c.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update %s: %w", obj.GetName(), err)
	}
	return nil
}
