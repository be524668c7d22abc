package adapters

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mercato-shop/mercato/services/customer/app"
	"github.com/mercato-shop/mercato/services/customer/domain"
)

type clientTokenIssuing interface {
	Handle(ctx context.Context, cmd app.ClientToken) (app.ClientGrant, error)
}

// maxTokenRequest bounds the body of a token request: a few short fields.
const maxTokenRequest = 16 << 10

// tokenError is an error response of the token endpoint. The endpoint answers
// RFC 6749 section 5.2 errors ({"error","error_description"}), not
// problem+json like the rest of mercato: OAuth clients expect that shape, and
// the RFC mandates it.
type tokenError struct {
	status      int
	code        string // invalid_request, invalid_client, invalid_scope, ...
	description string
	// basic: the client tried HTTP Basic, so invalid_client is a 401 with a
	// Basic challenge (RFC 6749 section 5.2).
	basic bool
}

func invalidRequest(description string) *tokenError {
	return &tokenError{status: http.StatusBadRequest, code: "invalid_request", description: description}
}

func invalidClient(description string, basic bool) *tokenError {
	status := http.StatusBadRequest
	if basic {
		status = http.StatusUnauthorized
	}
	return &tokenError{status: status, code: "invalid_client", description: description, basic: basic}
}

// tokenRequest is a parsed client credentials request.
type tokenRequest struct {
	clientID, secret string
	scopes           []string
	basic            bool
}

// token serves POST /oauth/token, the OAuth 2.0 client credentials grant
// (RFC 6749 section 4.4) for machine clients. It never logs the secret.
func (h *HTTP) token(w http.ResponseWriter, r *http.Request) {
	// Tokens and errors alike must not be cached (RFC 6749 section 5.1).
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeTokenError(w, &tokenError{status: http.StatusMethodNotAllowed, code: "invalid_request", description: "use POST"})
		return
	}
	req, terr := parseTokenRequest(w, r)
	if terr != nil {
		writeTokenError(w, terr)
		return
	}
	grant, err := h.ClientToken.Handle(r.Context(), app.ClientToken{ClientID: req.clientID, Secret: req.secret, Scopes: req.scopes})
	switch {
	case errors.Is(err, domain.ErrInvalidClient):
		writeTokenError(w, invalidClient("unknown client or wrong secret", req.basic))
		return
	case errors.Is(err, domain.ErrInvalidScope):
		writeTokenError(w, &tokenError{status: http.StatusBadRequest, code: "invalid_scope", description: "a requested scope is not granted to this client"})
		return
	case err != nil:
		h.Logger.ErrorContext(r.Context(), "token request failed", "client_id", req.clientID, "err", err)
		writeTokenError(w, &tokenError{status: http.StatusInternalServerError, code: "server_error"})
		return
	}
	writeTokenJSON(w, http.StatusOK, map[string]any{
		"access_token": grant.AccessToken,
		"token_type":   "Bearer",
		"expires_in":   int(grant.ExpiresIn.Seconds()),
		"scope":        strings.Join(grant.Scopes, " "),
	})
}

// parseTokenRequest reads the form body and the client's credentials: HTTP
// Basic (client_secret_basic) or client_id and client_secret in the body
// (client_secret_post), never both (RFC 6749 section 2.3).
func parseTokenRequest(w http.ResponseWriter, r *http.Request) (tokenRequest, *tokenError) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return tokenRequest{}, invalidRequest("send the parameters as application/x-www-form-urlencoded")
	}
	// Parameters in the URL end up in access logs, secrets included.
	if r.URL.RawQuery != "" {
		return tokenRequest{}, invalidRequest("send the parameters in the body, not in the URL")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokenRequest))
	if err != nil {
		return tokenRequest{}, invalidRequest("the body is too large or unreadable")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return tokenRequest{}, invalidRequest("the body is not form-urlencoded")
	}
	for k, v := range form {
		if len(v) > 1 {
			return tokenRequest{}, invalidRequest(k + " is repeated")
		}
	}
	// An empty parameter counts as omitted (RFC 6749 section 3.1).
	switch gt := form.Get("grant_type"); gt {
	case "":
		return tokenRequest{}, invalidRequest("grant_type is required")
	case "client_credentials":
	default:
		return tokenRequest{}, &tokenError{status: http.StatusBadRequest, code: "unsupported_grant_type",
			description: "this endpoint supports grant_type=client_credentials only"}
	}

	var req tokenRequest
	formID, formSecret := form.Get("client_id"), form.Get("client_secret")
	if r.Header.Get("Authorization") != "" {
		req.basic = true
		id, secret, ok := r.BasicAuth()
		if !ok {
			return tokenRequest{}, invalidClient("the Authorization header must be Basic", true)
		}
		// Both are form-urlencoded before Basic encoding (RFC 6749 section 2.3.1).
		if req.clientID, err = url.QueryUnescape(id); err != nil {
			return tokenRequest{}, invalidClient("the Basic credentials are not form-urlencoded", true)
		}
		if req.secret, err = url.QueryUnescape(secret); err != nil {
			return tokenRequest{}, invalidClient("the Basic credentials are not form-urlencoded", true)
		}
		if formSecret != "" || (formID != "" && formID != req.clientID) {
			return tokenRequest{}, invalidRequest("authenticate with HTTP Basic or with client_id and client_secret in the body, not both")
		}
	} else {
		req.clientID, req.secret = formID, formSecret
		if req.clientID == "" && req.secret != "" {
			return tokenRequest{}, invalidRequest("client_secret needs client_id")
		}
	}
	if req.clientID == "" || req.secret == "" {
		return tokenRequest{}, invalidClient("authenticate with HTTP Basic or with client_id and client_secret in the body", req.basic)
	}

	for _, s := range strings.Fields(form.Get("scope")) {
		if !domain.ValidScope(s) {
			return tokenRequest{}, &tokenError{status: http.StatusBadRequest, code: "invalid_scope", description: "malformed scope"}
		}
		if !slices.Contains(req.scopes, s) {
			req.scopes = append(req.scopes, s)
		}
	}
	return req, nil
}

func writeTokenError(w http.ResponseWriter, e *tokenError) {
	if e.code == "invalid_client" && e.basic {
		w.Header().Set("WWW-Authenticate", `Basic realm="mercato"`)
	}
	body := map[string]string{"error": e.code}
	if e.description != "" {
		body["error_description"] = e.description
	}
	writeTokenJSON(w, e.status, body)
}

func writeTokenJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
