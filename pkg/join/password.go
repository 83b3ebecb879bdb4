package join

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// A node password is a random secret each node keeps in its data dir. The
// first join of a node name stores its hash in a Secret; a later join of the
// same name must present the same password, so one machine cannot take over
// another's name. A joined node re-checks its password at every start (the
// record is re-created when missing). Deleting the Node frees the name
// NameGrace later, unless the Node is back by then (DeleteNodePasswords).
const (
	passwordNamespace = "kube-system"
	passwordSuffix    = ".node-password.bramble"
	managedBy         = "app.kubernetes.io/managed-by"
)

// NameGrace is how long a deleted Node's name stays protected: a node whose
// Node was deleted while it runs stops (kube-proxy exits when its Node is
// deleted) and, restarted by its service manager within this time, keeps
// its name.
const NameGrace = 30 * time.Second

var errNameTaken = errors.New("already registered by another machine")

func passwordSecretName(node string) string { return node + passwordSuffix }

func hashPassword(p string) []byte {
	sum := sha256.Sum256([]byte(p))
	return []byte(hex.EncodeToString(sum[:]))
}

// claimNodeName stores the password's hash for a new name, or checks it
// against the stored one. A name whose Node exists without a stored
// password is refused unless nodeProven (the caller proved it is that
// node, with its certificate).
func claimNodeName(ctx context.Context, cs kubernetes.Interface, node, password string, nodeProven bool) error {
	secrets := cs.CoreV1().Secrets(passwordNamespace)
	want := hashPassword(password)
	for range 2 {
		s, err := secrets.Get(ctx, passwordSecretName(node), metav1.GetOptions{})
		if err == nil {
			if subtle.ConstantTimeCompare(s.Data["hash"], want) != 1 {
				return fmt.Errorf("node name %q is %w (node password mismatch); run `kubectl delete node %s` on the server to free the name (free %s later, once that machine is stopped), or pick another --node-name", node, errNameTaken, node, NameGrace)
			}
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("read node password of %s: %w", node, err)
		}
		if !nodeProven {
			_, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err == nil {
				return fmt.Errorf("node name %q is %w: its Node exists without a node password (the machine re-creates it at its next start); if that machine is gone, run `kubectl delete node %s` on the server and join again %s later, or pick another --node-name",
					node, errNameTaken, node, NameGrace)
			}
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("read Node %s: %w", node, err)
			}
		}
		obj := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: passwordSecretName(node), Namespace: passwordNamespace,
				Labels: map[string]string{managedBy: "bramble"}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"hash": want},
		}
		_, err = secrets.Create(ctx, obj, metav1.CreateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("store node password of %s: %w", node, err)
		}
		// Another join of the same name won the race: compare with it.
	}
	return fmt.Errorf("node password of %s: conflicting concurrent joins", node)
}

// DeleteNodePasswords frees a node's name NameGrace after its Node is
// deleted, unless a Node of that name is back by then, until ctx ends. At
// start it does the same for records whose Node is gone (deleted while the
// server was down) and that are older than NameGrace (a node that just
// joined has a record before its Node).
func DeleteNodePasswords(ctx context.Context, cs kubernetes.Interface, log *slog.Logger) error {
	return deleteNodePasswords(ctx, cs, NameGrace, log)
}

func deleteNodePasswords(ctx context.Context, cs kubernetes.Interface, grace time.Duration, log *slog.Logger) error {
	factory := informers.NewSharedInformerFactory(cs, 0)
	nodes := factory.Core().V1().Nodes()
	inf := nodes.Informer()
	free := func(name string) {
		time.AfterFunc(grace, func() {
			if ctx.Err() != nil {
				return
			}
			if _, err := nodes.Lister().Get(name); err == nil {
				log.Info("node is back: it keeps its name", "node", name)
				return
			}
			err := cs.CoreV1().Secrets(passwordNamespace).Delete(ctx, passwordSecretName(name), metav1.DeleteOptions{})
			switch {
			case err == nil:
				log.Info("node deleted: its name is free to join again", "node", name)
			case !apierrors.IsNotFound(err) && ctx.Err() == nil:
				log.Warn("delete node password", "node", name, "err", err)
			}
		})
	}
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if node, ok := obj.(*corev1.Node); ok {
			free(node.Name)
		}
	}})
	if err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil
	}
	records, err := cs.CoreV1().Secrets(passwordNamespace).List(ctx, metav1.ListOptions{LabelSelector: managedBy + "=bramble"})
	if err != nil && ctx.Err() == nil {
		log.Warn("list node passwords", "err", err)
	}
	if err == nil {
		for _, r := range records.Items {
			name, ok := strings.CutSuffix(r.Name, passwordSuffix)
			if !ok {
				continue
			}
			if _, err := nodes.Lister().Get(name); err != nil && time.Since(r.CreationTimestamp.Time) > grace {
				free(name)
			}
		}
	}
	<-ctx.Done()
	return nil
}
