package gateway

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"

	"golang.org/x/net/http/httpguts"
)

// Split divides a route's requests between versions of its service, as
// instances announce them in discovery: by weight (a canary at 5, or
// blue-green at 100 and 0, flipped by loading new weights through PUT
// /admin/routes), or by a header naming the version (a tester trying the
// canary on purpose).
type Split struct {
	// Weights per version; a request goes to version v with probability
	// Weights[v] / the sum of all.
	Weights map[string]int `yaml:"weights"`
	// Header, when set, names a version for the request that sends it with
	// one of Weights' versions (a weight of 0 included); other values are
	// ignored.
	Header string `yaml:"header"`

	// Set by prepare: the versions in a fixed order, so that a weight is
	// the same share whatever a map's iteration order, and their sum.
	versions []string
	total    int
}

// prepare orders the versions once, at load.
func (s *Split) prepare() {
	s.versions, s.total = s.versions[:0], 0
	for v, w := range s.Weights {
		s.versions = append(s.versions, v)
		s.total += w
	}
	slices.SortFunc(s.versions, cmp.Compare)
}

var versionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (s *Split) validate() []string {
	var out []string
	if len(s.Weights) == 0 {
		return []string{"split.weights: at least one version is required"}
	}
	total := 0
	for v, w := range s.Weights {
		if !versionName.MatchString(v) {
			out = append(out, fmt.Sprintf("split.weights: version %q must be letters, digits, '.', '_' or '-'", v))
		}
		if w < 0 || w > 1_000_000 {
			out = append(out, fmt.Sprintf("split.weights: the weight of %s must be from 0 to 1000000", v))
		}
		total += w
	}
	if total <= 0 {
		out = append(out, "split.weights: at least one weight must be above 0")
	}
	if s.Header != "" && !httpguts.ValidHeaderFieldName(s.Header) {
		out = append(out, fmt.Sprintf("split.header %q is not a header name", s.Header))
	}
	return out
}

// pick chooses the version for r.
func (s *Split) pick(r *http.Request) string {
	if s.Header != "" {
		if v := r.Header.Get(s.Header); v != "" {
			if _, ok := s.Weights[v]; ok {
				return v
			}
		}
	}
	n := rand.IntN(s.total)
	for _, v := range s.versions {
		if n < s.Weights[v] {
			return v
		}
		n -= s.Weights[v]
	}
	return s.versions[len(s.versions)-1] // not reached: n < total
}
