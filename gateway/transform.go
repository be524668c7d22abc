package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/mercato-shop/mercato/platform/web"
)

// Rewrite changes what a route sends upstream and what it answers.
type Rewrite struct {
	// Path is the upstream path, with the route pattern's {name} and
	// {name...} filled in: /api/products/{id} -> /v2/items/{id}. Empty
	// sends the client's path.
	Path            string         `yaml:"path"`
	RequestHeaders  HeaderRewrites `yaml:"request_headers"`
	ResponseHeaders HeaderRewrites `yaml:"response_headers"`
}

// HeaderRewrites sets and removes headers.
type HeaderRewrites struct {
	Set    map[string]string `yaml:"set"`
	Remove []string          `yaml:"remove"`
}

func (h HeaderRewrites) apply(dst http.Header) {
	for _, k := range h.Remove {
		dst.Del(k)
	}
	for k, v := range h.Set {
		dst.Set(k, v)
	}
}

// reserved headers a rewrite may not touch: the caller's identity is the
// gateway's to say, and framing is the transport's.
var reserved = []string{web.SubjectHeader, web.RolesHeader, "Content-Length", "Transfer-Encoding", "Connection", "Host"}

var placeholder = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}`)

func (rw *Rewrite) validate(pattern string) []string {
	var out []string
	if rw.Path != "" {
		if !strings.HasPrefix(rw.Path, "/") {
			out = append(out, fmt.Sprintf("rewrite.path %q must start with /", rw.Path))
		}
		for _, m := range placeholder.FindAllStringSubmatch(rw.Path, -1) {
			if !strings.Contains(pattern, "{"+m[1]+"}") && !strings.Contains(pattern, "{"+m[1]+"...}") {
				out = append(out, fmt.Sprintf("rewrite.path: {%s} is not in the route's path", m[1]))
			}
		}
	}
	for where, h := range map[string]HeaderRewrites{"request_headers": rw.RequestHeaders, "response_headers": rw.ResponseHeaders} {
		names := h.Remove
		for k, v := range h.Set {
			names = append(names, k)
			if !httpguts.ValidHeaderFieldValue(v) {
				out = append(out, fmt.Sprintf("rewrite.%s: the value of %s is not a header value", where, k))
			}
		}
		for _, k := range names {
			if !httpguts.ValidHeaderFieldName(k) {
				out = append(out, fmt.Sprintf("rewrite.%s: %q is not a header name", where, k))
			}
			for _, r := range reserved {
				if strings.EqualFold(k, r) {
					out = append(out, fmt.Sprintf("rewrite.%s: %s is not the route's to change", where, r))
				}
			}
		}
	}
	return out
}

// path fills the rewrite's path from in's path values. Each value is
// escaped again, segment by segment, so a value cannot add a segment.
func (rw *Rewrite) path(in *http.Request) (path, raw string) {
	escaped := placeholder.ReplaceAllStringFunc(rw.Path, func(m string) string {
		sub := placeholder.FindStringSubmatch(m)
		// {name...} in the route's pattern spans segments, however the
		// rewrite writes it.
		if sub[2] == "" && !strings.Contains(in.Pattern, "{"+sub[1]+"...}") {
			return url.PathEscape(in.PathValue(sub[1]))
		}
		segs := strings.Split(in.PathValue(sub[1]), "/")
		for i, s := range segs {
			segs[i] = url.PathEscape(s)
		}
		return strings.Join(segs, "/")
	})
	decoded, err := url.PathUnescape(escaped)
	if err != nil {
		return escaped, ""
	}
	if decoded == escaped {
		return decoded, ""
	}
	return decoded, escaped
}

// maxFiltered bounds a JSON answer whose fields are filtered; a larger one
// is passed through whole.
const maxFiltered = 4 << 20

// filterFields keeps only fields of a JSON answer: the object's top-level
// keys, or those of each object of an array. An answer that is not JSON,
// not 2xx, or too large is left as it is.
func filterFields(resp *http.Response, fields []string) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 || resp.Request.Method == http.MethodHead {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil
	}
	if resp.Header.Get("Content-Encoding") != "" || resp.ContentLength > maxFiltered {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFiltered+1))
	if err != nil {
		resp.Body.Close()
		return fmt.Errorf("read the answer to filter: %w", err)
	}
	if len(body) > maxFiltered {
		// Too large to filter: what was read goes first, then the rest.
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
		return nil
	}
	resp.Body.Close()
	out := body
	// Numbers stay as written: float64 would round those above 2^53.
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) == nil {
		if b, err := json.Marshal(keep(v, fields)); err == nil {
			out = b
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	return nil
}

func keep(v any, fields []string) any {
	switch t := v.(type) {
	case map[string]any:
		kept := make(map[string]any, len(fields))
		for _, f := range fields {
			if x, ok := t[f]; ok {
				kept[f] = x
			}
		}
		return kept
	case []any:
		for i, x := range t {
			t[i] = keep(x, fields)
		}
		return t
	default:
		return v
	}
}
