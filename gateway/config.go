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
	"time"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"
)

// Config is the gateway's route file.
type Config struct {
	JWT          JWTConfig       `yaml:"jwt"`
	MaxBodyBytes int64           `yaml:"max_body_bytes"`
	RateLimit    RateLimitConfig `yaml:"ratelimit"`
	// BFF sets the timeouts of the BFF profiles' parts.
	BFF BFFConfig `yaml:"bff"`
	// CacheMaxBytes bounds the response cache of all routes together.
	CacheMaxBytes int64   `yaml:"cache_max_bytes"`
	Routes        []Route `yaml:"routes"`
}

// WithoutRateLimits returns cfg with every route's limit off.
func (cfg Config) WithoutRateLimits() Config {
	cfg.Routes = slices.Clone(cfg.Routes)
	for i := range cfg.Routes {
		cfg.Routes[i].RateLimit = Limit{}
	}
	cfg.RateLimit.Default = Limit{}
	return cfg
}

// RateLimitConfig says where callers' allowances are kept and what a
// route without a limit of its own gets.
type RateLimitConfig struct {
	// Default applies to every route that does not set ratelimit.
	Default Limit `yaml:"default"`
	// Store is memory (this instance alone) or redis (shared by every
	// instance using RedisURL).
	Store    string `yaml:"store"`
	RedisURL string `yaml:"redis_url"`
}

// Rate limit stores.
const (
	StoreMemory = "memory"
	StoreRedis  = "redis"
)

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
	// RateLimit is the limit per caller (the token's subject, else the
	// client's address); RateLimitConfig.Default when not set.
	RateLimit Limit `yaml:"-"` // read by ParseConfig, to name the line of a bad one
	// Split sends the route's requests to versions of the service (canary,
	// blue-green); nil sends them to any instance.
	Split *Split `yaml:"split"`
	// Timeout bounds the upstream exchange to the end of the answer,
	// retries included: past it before the answer began, the caller gets
	// 504. Zero leaves it to the service's resilience policies.
	Timeout time.Duration `yaml:"timeout"`
	// Rewrite changes the upstream path and headers, and the answer's
	// headers.
	Rewrite *Rewrite `yaml:"rewrite"`
	// Fields, when set, keeps only these top-level fields of a JSON answer
	// (of each element, for an array): a client gets what it needs.
	Fields []string `yaml:"fields"`
	// Cache answers GETs from memory for a while; a zero TTL caches nothing.
	Cache CacheConfig `yaml:"-"` // read by ParseConfig, to name the line of a bad one
	line  int
	// name identifies the route in limits, logs and metrics: "GET /api/products".
	name string
}

var routeKeys = []string{"path", "methods", "service", "auth", "roles", "stream", "ratelimit", "split", "timeout", "rewrite", "fields", "cache"}

var serviceName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// ParseConfig reads a route file. Unknown keys and invalid routes are
// errors that name their line.
func ParseConfig(data []byte) (Config, error) {
	var raw struct {
		JWT          JWTConfig       `yaml:"jwt"`
		MaxBodyBytes int64           `yaml:"max_body_bytes"`
		RateLimit    RateLimitConfig `yaml:"ratelimit"`
		BFF          BFFConfig       `yaml:"bff"`
		CacheMax     int64           `yaml:"cache_max_bytes"`
		Routes       []yaml.Node     `yaml:"routes"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return Config{}, fmt.Errorf("gateway config: %w", err)
	}
	cfg := Config{JWT: raw.JWT, MaxBodyBytes: raw.MaxBodyBytes, RateLimit: raw.RateLimit, BFF: raw.BFF, CacheMaxBytes: raw.CacheMax}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.CacheMaxBytes <= 0 {
		cfg.CacheMaxBytes = 64 << 20
	}
	var errs []error
	switch cfg.RateLimit.Store {
	case "":
		cfg.RateLimit.Store = StoreMemory
	case StoreMemory:
	case StoreRedis:
		if _, err := redis.ParseURL(cfg.RateLimit.RedisURL); err != nil {
			errs = append(errs, fmt.Errorf("gateway config: ratelimit.redis_url: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("gateway config: ratelimit.store %q must be memory or redis", cfg.RateLimit.Store))
	}
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
		r.RateLimit = cfg.RateLimit.Default
		if v := value(n, "ratelimit"); v != nil {
			if err := r.RateLimit.UnmarshalYAML(v); err != nil {
				errs = append(errs, fmt.Errorf("gateway config: line %d: %w", v.Line, err))
			}
		}
		if v := value(n, "cache"); v != nil {
			c, err := parseCacheConfig(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("gateway config: line %d: %w", v.Line, err))
			}
			r.Cache = c
		}
		if r.Auth == "" {
			r.Auth = AuthJWT // closed by default: a route is public only when it says so
		}
		for i, m := range r.Methods {
			r.Methods[i] = strings.ToUpper(m)
		}
		r.name = strings.Join(r.Methods, ",") + " " + r.Path
		if r.Split != nil {
			r.Split.prepare()
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
	if r.Split != nil {
		out = append(out, r.Split.validate()...)
	}
	if r.Cache.TTL > 0 && (!slices.Contains(r.Methods, http.MethodGet) || r.Stream || r.Service == Self || len(r.Fields) > 0) {
		out = append(out, "cache needs a GET route to an upstream service that does not stream or filter fields")
	}
	if r.Cache.TTL > 0 && r.Split != nil {
		out = append(out, "cache and split exclude each other: a cached answer would cross versions")
	}
	if r.Rewrite != nil {
		out = append(out, r.Rewrite.validate(r.Path)...)
	}
	if r.Timeout < 0 || r.Timeout > 5*time.Minute {
		out = append(out, "timeout must be from 0 to 5m")
	}
	if r.Timeout > 0 && r.Stream {
		out = append(out, "timeout and stream exclude each other: a stream lasts as long as it must")
	}
	for _, f := range r.Fields {
		if f == "" {
			out = append(out, "fields: a field name is empty")
		}
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

// value is the value of key in the mapping n, or nil.
func value(n yaml.Node, key string) *yaml.Node {
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
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
