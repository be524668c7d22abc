// Package arch enforces the rules that keep mercato microservices and not a
// distributed monolith: a service never imports another service, platform
// never imports business code, and domain packages do no I/O.
package arch

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/mercato-shop/mercato"

// imports maps each Go package directory (relative to the repository root)
// to the module-internal packages it imports, tests included.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			out[rel] = append(out[rel], p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("found no Go files")
	}
	return out
}

func service(dir string) string {
	if rest, ok := strings.CutPrefix(dir, "services/"); ok {
		name, _, _ := strings.Cut(rest, "/")
		return name
	}
	return ""
}

func TestServicesDoNotImportEachOther(t *testing.T) {
	// Only composition roots (cmd/, shop/, tests) may import several services.
	for dir, imps := range imports(t) {
		own := service(dir)
		if own == "" {
			continue
		}
		for _, imp := range imps {
			other := service(strings.TrimPrefix(imp, module+"/"))
			if strings.HasPrefix(imp, module+"/services/") && own != other {
				t.Errorf("%s imports %s: services talk over the network (api/ contracts, RPC, events)", dir, imp)
			}
		}
	}
}

func TestPlatformAndGatewayImportNoBusinessCode(t *testing.T) {
	for dir, imps := range imports(t) {
		if !strings.HasPrefix(dir, "platform/") && !strings.HasPrefix(dir, "gateway") {
			continue
		}
		for _, imp := range imps {
			for _, banned := range []string{"/services/", "/shop", "/cmd/"} {
				if strings.HasPrefix(imp, module) && strings.Contains(imp, banned) {
					t.Errorf("%s imports %s", dir, imp)
				}
			}
		}
	}
}

func TestDomainPackagesDoNoIO(t *testing.T) {
	allowed := func(imp string) bool {
		if !strings.Contains(imp, ".") { // the standard library...
			for _, io := range []string{"database/sql", "net/http", "os"} {
				if imp == io {
					return false
				}
			}
			return true
		}
		return imp == "github.com/google/uuid" || strings.HasPrefix(imp, "golang.org/x/crypto/")
	}
	checked := 0
	for dir, imps := range imports(t) {
		if !strings.HasSuffix(dir, "/domain") {
			continue
		}
		checked++
		for _, imp := range imps {
			if !allowed(imp) {
				t.Errorf("%s imports %s: domain code does no I/O and knows no adapters", dir, imp)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no domain packages found")
	}
}

func TestEveryServiceOwnsItsMigrations(t *testing.T) {
	entries, err := os.ReadDir("../../services")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sql, _ := filepath.Glob(filepath.Join("../../services", e.Name(), "migrations", "*.sql"))
		if len(sql) == 0 {
			t.Errorf("services/%s has no migrations of its own", e.Name())
		}
	}
}
