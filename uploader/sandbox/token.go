package sandbox

import (
	"net/http"
	"time"
)

// HandleToken is the OAuth2 token endpoint (refresh_token grant) the platforms that use
// OAuth share: it issues access tokens valid for Options.TokenTTL, kept in the token store
// (TokenLocked). The Server serves it at /token; a platform's emulator may route its own
// token path to it.
func (s *Server) HandleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "unparseable form"})
		return
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if r.PostForm.Get("grant_type") != "refresh_token" {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type", "error_description": "only refresh_token is emulated"})
		return
	}
	if id == "" || secret == "" || (s.opts.ClientID != "" && (id != s.opts.ClientID || secret != s.opts.ClientSecret)) {
		WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "The OAuth client was not found."})
		return
	}
	rt := r.PostForm.Get("refresh_token")
	if rt == "" || (s.opts.RefreshToken != "" && rt != s.opts.RefreshToken) {
		WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
		return
	}
	s.mu.Lock()
	tok := s.NextIDLocked("sandbox-access-token")
	s.tokens[tok] = s.now().Add(s.opts.TokenTTL)
	s.mu.Unlock()
	WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": tok, "expires_in": int(s.opts.TokenTTL / time.Second), "token_type": "Bearer",
		"scope": r.PostForm.Get("scope"),
	})
}

// JSON access helpers over values decoded with ReadJSON: the value as an object, an array
// or a string, the zero value when it is not one.
func Obj(v any) map[string]any { m, _ := v.(map[string]any); return m }

// Arr is v as an array (nil when it is not one).
func Arr(v any) []any { a, _ := v.([]any); return a }

// Str is v as a string ("" when it is not one).
func Str(v any) string { s, _ := v.(string); return s }
