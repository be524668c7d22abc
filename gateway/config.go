package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Config is the gateway's route file.
type Config struct {
	JWT          JWTConfig `yaml:"jwt"`
	MaxBodyBytes int64     `yaml:"max_body_bytes"`
	Routes       []Route   `yaml:"routes"`
}

// JWTConfig says which tokens the gateway accepts.
type JWTConfig struct {
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	JWKS     string `yaml:"jwks"` // URL of the key set; a service name as host goes through discovery
}

// Auth modes of a route.
const (
	AuthNone = "none"
	AuthJWT  = "jwt"
)

// Route sends requests for a path to a service.
type Route struct {
	Path    string   `yaml:"path"`
	Methods []string `yaml:"methods"`
	Service string   `yaml:"service"`
	Auth    string   `yaml:"auth"`
	Roles   []string `yaml:"roles"`
	// Stream marks a long-lived response (server-sent events): the
	// gateway lifts its read deadline for it, which would otherwise end the
	// request once ReadTimeout has passed.
	Stream bool `yaml:"stream"`
	line   int
}

var routeKeys = []string{"path", "methods", "service", "auth", "roles", "stream"}

var serviceName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// ParseConfig reads a route file. Unknown keys and invalid routes are
// errors that name their line.
func ParseConfig(data []byte) (Config, error) {
	var raw struct {
		JWT          JWTConfig   `yaml:"jwt"`
		MaxBodyBytes int64       `yaml:"max_body_bytes"`
		Routes       []yaml.Node `yaml:"routes"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return Config{}, fmt.Errorf("gateway config: %w", err)
	}
	cfg := Config{JWT: raw.JWT, MaxBodyBytes: raw.MaxBodyBytes}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	var errs []error
	if cfg.JWT.Issuer == "" || cfg.JWT.Audience == "" || cfg.JWT.JWKS == "" {
		errs = append(errs, errors.New("gateway config: jwt needs issuer, audience and jwks"))
	} else if u, err := url.Parse(cfg.JWT.JWKS); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("gateway config: jwt.jwks %q must be an http(s) URL", cfg.JWT.JWKS))
	}
	seen := map[string]int{}
	for _, n := range raw.Routes {
		// Node.Decode ignores KnownFields, so route keys are checked here.
		for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; !slices.Contains(routeKeys, k.Value) {
				errs = append(errs, fmt.Errorf("gateway config: line %d: unknown key %q", k.Line, k.Value))
			}
		}
		var r Route
		if err := n.Decode(&r); err != nil {
			errs = append(errs, fmt.Errorf("gateway config: line %d: %w", n.Line, err))
			continue
		}
		r.line = n.Line
		if r.Auth == "" {
			r.Auth = AuthJWT // closed by default: a route is public only when it says so
		}
		for i, m := range r.Methods {
			r.Methods[i] = strings.ToUpper(m)
		}
		for _, problem := range r.validate() {
			errs = append(errs, fmt.Errorf("gateway config: line %d: %s", n.Line, problem))
		}
		for _, m := range r.Methods {
			key := m + " " + r.Path
			if prev, dup := seen[key]; dup {
				errs = append(errs, fmt.Errorf("gateway config: line %d: %s is already routed at line %d", n.Line, key, prev))
			}
			seen[key] = n.Line
		}
		cfg.Routes = append(cfg.Routes, r)
	}
	// New registers each path on a ServeMux, which panics on a bad or
	// conflicting pattern: try them here, beside New's catch-all "/".
	mux := http.NewServeMux()
	mux.Handle("/", http.NotFoundHandler())
	done := map[string]bool{}
	for _, r := range cfg.Routes {
		if done[r.Path] {
			continue
		}
		done[r.Path] = true
		if err := register(mux, r.Path); err != nil {
			errs = append(errs, fmt.Errorf("gateway config: line %d: path %q: %w", r.line, r.Path, err))
		}
	}
	if len(cfg.Routes) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("gateway config: no routes"))
	}
	return cfg, errors.Join(errs...)
}

func (r Route) validate() []string {
	var out []string
	if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, " \t") {
		out = append(out, fmt.Sprintf("path %q must start with / and hold no spaces", r.Path))
	}
	if len(r.Methods) == 0 {
		out = append(out, "methods: at least one is required")
	}
	known := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	for _, m := range r.Methods {
		if !slices.Contains(known, m) {
			out = append(out, fmt.Sprintf("method %q is not supported", m))
		}
	}
	if !serviceName.MatchString(r.Service) {
		out = append(out, fmt.Sprintf("service %q must be a service name", r.Service))
	}
	switch r.Auth {
	case AuthNone:
		if len(r.Roles) > 0 {
			out = append(out, "roles need auth: jwt")
		}
	case AuthJWT:
	default:
		out = append(out, fmt.Sprintf("auth %q must be none or jwt", r.Auth))
	}
	return out
}

// register adds pattern to mux; ServeMux reports a bad pattern only by panicking.
func register(mux *http.ServeMux, pattern string) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%v", v)
		}
	}()
	mux.Handle(pattern, http.NotFoundHandler())
	return nil
}
