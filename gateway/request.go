package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/mercato-shop/mercato/platform/web"
)

// pathProblem says why the gateway refuses a request path, or "" when it
// does not. Routes match the escaped path segment by segment, and the
// upstream gets it escaped, so an encoded slash or dot segment matches one
// route here and decodes to another: /api/products/..%2f..%2fadmin matches
// /api/products/{id} and means /admin. No mercato path needs one, nor a
// backslash (a separator to some readers) or a control character.
func pathProblem(u *url.URL) string {
	decoded, escaped := strings.Split(u.Path, "/"), strings.Split(u.EscapedPath(), "/")
	if len(decoded) != len(escaped) {
		return "the path holds an encoded slash"
	}
	for i, s := range decoded {
		if (s == "." || s == "..") && escaped[i] != s {
			return "the path holds an encoded dot segment"
		}
	}
	if strings.ContainsFunc(u.Path, func(r rune) bool { return r == '\\' || unicode.IsControl(r) }) {
		return "the path holds a backslash or a control character"
	}
	return ""
}

// readBody reads a body of unknown length (chunked) whole, within the
// gateway's limit, before anything is forwarded: streamed, its start would
// reach the upstream before the limit refused it, and a handler that does
// not read its body (cancel) would act on a request answered 413. It
// reports whether the request may go on; if not, it has answered.
func readBody(w http.ResponseWriter, r *http.Request) bool {
	body, err := io.ReadAll(r.Body) // a MaxBytesReader: bounded
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		web.Error(w, r, http.StatusRequestEntityTooLarge, "the body is larger than the gateway accepts")
		return false
	case err != nil:
		web.Error(w, r, http.StatusBadRequest, "the body could not be read")
		return false
	}
	r.ContentLength, r.TransferEncoding, r.Body = int64(len(body)), nil, http.NoBody
	if len(body) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	return true
}
