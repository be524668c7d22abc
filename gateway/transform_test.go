package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mercato-shop/mercato/platform/discovery"
)

const transformRoutes = jwtLines + `ratelimit:
  default: off
routes:
  - path: /shop/items/{id}/{rest...}
    methods: [GET]
    service: catalog
    auth: none
    rewrite:
      path: /v2/products/{id}/{rest}
      request_headers:
        set: {X-Client: web}
        remove: [Cookie]
      response_headers:
        set: {Cache-Control: "public, max-age=10"}
        remove: [Server]
  - path: /shop/list
    methods: [GET]
    service: catalog
    auth: none
    fields: [id, name]
  - path: /shop/slow
    methods: [GET]
    service: catalog
    auth: none
    timeout: 50ms
`

func transformGateway(t *testing.T, upstream http.Handler) http.Handler {
	t.Helper()
	srv := httptest.NewServer(upstream)
	t.Cleanup(srv.Close)
	cfg, err := ParseConfig([]byte(transformRoutes))
	if err != nil {
		t.Fatal(err)
	}
	return New(cfg, discovery.Transport(discovery.Static(map[string][]string{"catalog": {strings.TrimPrefix(srv.URL, "http://")}}), nil),
		newSigner(t, "k1").jwksKeyfunc(t), slog.New(slog.DiscardHandler))
}

func TestRewrite_PathAndHeaders(t *testing.T) {
	var seen *http.Request
	gw := transformGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Clone(r.Context())
		w.Header().Set("Server", "catalog/1.2")
		fmt.Fprint(w, "ok")
	}))
	req := httptest.NewRequest(http.MethodGet, "/shop/items/a%20b/x/y?color=red", nil)
	req.Header.Set("Cookie", "session=secret")
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if got := seen.URL.RequestURI(); got != "/v2/products/a%20b/x/y?color=red" {
		t.Errorf("upstream path %q", got)
	}
	if seen.Header.Get("X-Client") != "web" || seen.Header.Get("Cookie") != "" {
		t.Errorf("upstream headers %v", seen.Header)
	}
	if w.Header().Get("Server") != "" || w.Header().Get("Cache-Control") != "public, max-age=10" {
		t.Errorf("answer headers %v", w.Header())
	}

	// A value cannot add a segment: an encoded slash is refused before
	// routing, and {id} is escaped again on the way up.
	w = httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/shop/items/..%2fadmin/x", nil))
	if w.Code != http.StatusBadRequest {
		t.Errorf("an encoded slash in {id}: %d", w.Code)
	}
}

func TestRewrite_FieldsAndTimeout(t *testing.T) {
	canceled := make(chan struct{})
	gw := transformGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/shop/list":
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			fmt.Fprint(w, `[{"id":"1","name":"Mug","cost":250,"supplier":"x"},{"id":"2","name":"Cap","cost":900}]`)
		case "/shop/slow":
			<-r.Context().Done() // until the gateway gives up
			close(canceled)
		}
	}))
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/shop/list", nil))
	var got []map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != http.StatusOK {
		t.Fatalf("%d %s %v", w.Code, w.Body, err)
	}
	if len(got) != 2 || len(got[0]) != 2 || got[0]["name"] != "Mug" || got[1]["id"] != "2" || got[1]["cost"] != nil {
		t.Fatalf("filtered answer %s", w.Body)
	}
	if cl := w.Header().Get("Content-Length"); cl != fmt.Sprint(w.Body.Len()) {
		t.Fatalf("Content-Length %s for %d bytes", cl, w.Body.Len())
	}

	w = httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/shop/slow", nil))
	if w.Code != http.StatusGatewayTimeout {
		t.Fatalf("a route past its timeout: %d %s", w.Code, w.Body)
	}
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream call was not canceled")
	}
}

func TestRewrite_Validation(t *testing.T) {
	for from, to := range map[string]string{
		"path: /v2/products/{id}/{rest}": "path: /v2/{nope}",
		"set: {X-Client: web}":           "set: {X-Mercato-Roles: admin}",
		"remove: [Cookie]":               "remove: [Content-Length]",
		"timeout: 50ms":                  "timeout: 50ms\n    stream: true",
	} {
		_, err := ParseConfig([]byte(strings.Replace(transformRoutes, from, to, 1)))
		if err == nil || !strings.Contains(err.Error(), "line ") {
			t.Errorf("%q: %v, want an error naming the line", to, err)
		}
	}
}

// Filtering keeps numbers as written, and a JSON answer too large to
// filter passes whole.
func TestRewrite_FieldsKeepNumbersAndPassLargeAnswers(t *testing.T) {
	big := `[{"id":"1","name":"` + strings.Repeat("x", maxFiltered) + `","cost":1}]`
	gw := transformGateway(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("big") != "" {
			_, _ = io.WriteString(w, big[:10]) // unknown length: chunked
			http.NewResponseController(w).Flush()
			_, _ = io.WriteString(w, big[10:])
			return
		}
		fmt.Fprint(w, `{"id":9007199254740993,"name":"Mug","cost":1}`)
	}))
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/shop/list", nil))
	if got := w.Body.String(); got != `{"id":9007199254740993,"name":"Mug"}` {
		t.Fatalf("filtered %s", got)
	}
	w = httptest.NewRecorder()
	gw.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/shop/list?big=1", nil))
	if w.Body.String() != big {
		t.Fatalf("a large answer came back as %d bytes, want %d whole", w.Body.Len(), len(big))
	}
}
