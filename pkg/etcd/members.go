package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// AddLearner adds a member (name, peerURL) to the cluster cli talks to as a
// learner and returns the initial cluster the new member starts with
// (name=peerURL for every member, sorted). A member already there with the
// same peer URL that never started (an earlier join that stopped before its
// etcd ran) is reused; one that started, or another member of that name, is
// a server whose data is gone (the joining server has none, or it would not
// ask): it is removed first. etcd refuses a removal that would lose quorum.
func AddLearner(ctx context.Context, cli *clientv3.Client, name, peerURL string) (string, error) {
	if name == "" || !strings.HasPrefix(peerURL, "https://") {
		return "", fmt.Errorf("etcd member %q at %q: want a name and an https:// peer URL", name, peerURL)
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd member list: %w", err)
	}
	members := list.Members
	var added uint64
	for _, m := range list.Members {
		samePeer := slices.Contains(m.PeerURLs, peerURL)
		switch {
		case samePeer && m.Name == "":
			added = m.ID
		case samePeer || m.Name == name:
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				return "", fmt.Errorf("etcd: remove the earlier member %q (%x) of this server: %w", m.Name, m.ID, err)
			}
			members = slices.DeleteFunc(members, func(x *etcdserverpb.Member) bool { return x.ID == m.ID })
		}
	}
	if added == 0 {
		resp, err := cli.MemberAddAsLearner(ctx, []string{peerURL})
		if err != nil {
			return "", fmt.Errorf("etcd: add learner %s: %w", peerURL, err)
		}
		added, members = resp.Member.ID, resp.Members
	}
	return InitialCluster(members, added, name), nil
}

// InitialCluster is the --initial-cluster of a member that joins: every
// member's name and peer URLs; the joining one (id) gets name, and any
// other member that has not started yet (no name) a placeholder (etcd
// matches the members by peer URL).
func InitialCluster(members []*etcdserverpb.Member, id uint64, name string) string {
	var parts []string
	for _, m := range members {
		n := m.Name
		switch {
		case m.ID == id:
			n = name
		case n == "":
			n = "unstarted-" + strconv.FormatUint(m.ID, 16)
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// PromoteLearners promotes every learner that caught up with the leader;
// one that has not yet stays a learner until the next call. It returns
// the names (or IDs) of the members promoted.
func PromoteLearners(ctx context.Context, cli *clientv3.Client, log *slog.Logger) ([]string, error) {
	list, err := cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("etcd member list: %w", err)
	}
	var promoted []string
	var errs []error
	for _, m := range list.Members {
		if !m.IsLearner {
			continue
		}
		_, err := cli.MemberPromote(ctx, m.ID)
		switch {
		case err == nil:
			promoted = append(promoted, memberName(m))
			log.Info("etcd learner promoted to a voting member", "member", memberName(m))
		case errors.Is(err, rpctypes.ErrMemberLearnerNotReady), errors.Is(err, rpctypes.ErrGRPCLearnerNotReady):
			log.Debug("etcd learner not caught up yet", "member", memberName(m))
		case errors.Is(err, rpctypes.ErrMemberNotLearner), errors.Is(err, rpctypes.ErrGRPCMemberNotLearner):
			// Promoted meanwhile (by another call).
		default:
			errs = append(errs, fmt.Errorf("promote %s: %w", memberName(m), err))
		}
	}
	return promoted, errors.Join(errs...)
}

// RemoveMember removes the member called name; false when there is none.
func RemoveMember(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return false, fmt.Errorf("etcd member list: %w", err)
	}
	for _, m := range list.Members {
		if m.Name == name {
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				return false, fmt.Errorf("etcd: remove member %s: %w", name, err)
			}
			return true, nil
		}
	}
	return false, nil
}

func memberName(m *etcdserverpb.Member) string {
	if m.Name != "" {
		return m.Name
	}
	return strconv.FormatUint(m.ID, 16)
}

// NewClient is a client of the member whose client URL is url, with the
// client certificate c (c.CAFile verifies the member).
func NewClient(url string, c TLS) (*clientv3.Client, error) {
	tlsCfg, err := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile}.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client certificate: %w", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// MemberLine describes a member for people: name, ID, voter or learner,
// started or not, peer URLs.
func MemberLine(m *etcdserverpb.Member) string {
	role := "voter"
	if m.IsLearner {
		role = "learner"
	}
	state := "started"
	if m.Name == "" {
		state = "unstarted"
	}
	return fmt.Sprintf("%s\t%x\t%s\t%s\t%s", memberName(m), m.ID, role, state, strings.Join(m.PeerURLs, ","))
}
