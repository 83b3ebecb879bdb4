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
// another's name. Deleting the Node frees the name (DeleteNodePasswords).
const (
	passwordNamespace = "kube-system"
	passwordSuffix    = ".node-password.bramble"
)

var errNameTaken = errors.New("already registered by another machine")

func passwordSecretName(node string) string { return node + passwordSuffix }

func hashPassword(p string) []byte {
	sum := sha256.Sum256([]byte(p))
	return []byte(hex.EncodeToString(sum[:]))
}

// claimNodeName stores the password's hash for a new name, or checks it
// against the stored one.
func claimNodeName(ctx context.Context, cs kubernetes.Interface, node, password string) error {
	secrets := cs.CoreV1().Secrets(passwordNamespace)
	want := hashPassword(password)
	for range 2 {
		s, err := secrets.Get(ctx, passwordSecretName(node), metav1.GetOptions{})
		if err == nil {
			if subtle.ConstantTimeCompare(s.Data["hash"], want) != 1 {
				return fmt.Errorf("node name %q is %w (node password mismatch); run `kubectl delete node %s` on the server to free the name, or pick another --node-name", node, errNameTaken, node)
			}
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("read node password of %s: %w", node, err)
		}
		obj := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: passwordSecretName(node), Namespace: passwordNamespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "bramble"}},
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

// DeleteNodePasswords frees a node's name when its Node is deleted, until
// ctx ends.
func DeleteNodePasswords(ctx context.Context, cs kubernetes.Interface, log *slog.Logger) error {
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Core().V1().Nodes().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		node, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		err := cs.CoreV1().Secrets(passwordNamespace).Delete(ctx, passwordSecretName(node.Name), metav1.DeleteOptions{})
		switch {
		case err == nil:
			log.Info("node deleted: its name is free to join again", "node", node.Name)
		case !apierrors.IsNotFound(err) && !strings.Contains(err.Error(), "context canceled"):
			log.Warn("delete node password", "node", node.Name, "err", err)
		}
	}})
	if err != nil {
		return fmt.Errorf("watch nodes: %w", err)
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	return nil
}
