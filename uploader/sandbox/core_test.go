package sandbox_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/closedloop/closedloop/uploader/sandbox"
)

// keyed is a minimal emulator: POST <path>?key=K counts K once per key (a second time as a
// duplicate) unless a drawn fault answers 503 first; its own state is the keys it saw.
type keyed struct {
	*sandbox.Server
	name, path string
	seen       map[string]bool
	resets     int
}

func mountKeyed(name, path string, got **keyed) sandbox.Mount {
	return func(s *sandbox.Server) sandbox.Emulator {
		*got = &keyed{Server: s, name: name, path: path}
		return *got
	}
}

func (k *keyed) Platform() string { return k.name }

func (k *keyed) ResetLocked() { k.seen = map[string]bool{}; k.resets++ }

func (k *keyed) Route(r *http.Request) http.HandlerFunc {
	if r.URL.Path != k.path {
		return nil
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if fl, _ := k.Draw(k.name); fl != sandbox.NoFault {
			sandbox.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"by": k.name})
			return
		}
		key := r.URL.Query().Get("key")
		k.Lock()
		k.RecordLocked(k.name, key, !k.seen[key])
		k.seen[key] = true
		k.CountsLocked(k.name).Requests++
		k.Unlock()
		sandbox.WriteJSON(w, http.StatusOK, map[string]string{"by": k.name})
	}
}

// TestMountedEmulators checks the core without any real platform: it routes to the
// emulators it was given in mount order, keys counts and the fault scope by their names,
// resets their state, and serves the token endpoint itself.
func TestMountedEmulators(t *testing.T) {
	t.Parallel()
	var a, b, shadow *keyed
	sb := sandbox.New(sandbox.Options{Faults: sandbox.Faults{Share5xx: 1, Platforms: []string{"beta"}}}, zaptest.NewLogger(t),
		mountKeyed("alpha", "/a", &a), mountKeyed("beta", "/b", &b), mountKeyed("shadow", "/a", &shadow))
	srv := httptest.NewServer(sb)
	t.Cleanup(srv.Close)
	post := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body map[string]string
		if resp.StatusCode != http.StatusNotFound {
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		}
		return resp.StatusCode, body["by"]
	}

	require.Equal(t, 1, a.resets, "New resets every emulator's state")
	for range 2 {
		status, by := post("/a?key=k1")
		require.Equal(t, http.StatusOK, status)
		require.Equal(t, "alpha", by, "the first mount that claims a path answers it")
	}
	status, by := post("/b?key=k1")
	require.Equal(t, http.StatusServiceUnavailable, status, "faults scoped to beta")
	require.Equal(t, "beta", by)
	status, _ = post("/nowhere")
	require.Equal(t, http.StatusNotFound, status)

	c := sb.Counts()
	require.Len(t, c, 3, "one entry per mounted platform")
	require.Equal(t, sandbox.KeyCount{Received: 2, Effective: 1}, *c["alpha"].Keys["k1"])
	require.Equal(t, 1, c["alpha"].Duplicates)
	require.Equal(t, 2, c["alpha"].Requests)
	require.Zero(t, c["alpha"].Faulted)
	require.Equal(t, 1, c["beta"].Faulted)
	require.Zero(t, c["shadow"].Requests)

	sb.Reset()
	require.Equal(t, 2, a.resets)
	require.Empty(t, a.seen)
	require.Empty(t, sb.Counts()["alpha"].Keys)

	resp, err := http.PostForm(srv.URL+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"r"}, "client_id": {"c"}, "client_secret": {"s"}})
	require.NoError(t, err)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tok))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the token endpoint needs no platform")
	sb.Lock()
	_, issued := sb.TokenLocked(tok.AccessToken)
	sb.Unlock()
	require.True(t, issued)
}
