package domain

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func plain(p string) (string, error) { return "hash:" + p, nil }

func TestNewCustomer_Validates(t *testing.T) {
	tests := []struct {
		name, email, cname, password string
		wantFields                   []string
	}{
		{"valid", "Ann@Example.com", "Ann", "correct horse", nil},
		{"empty email", "", "Ann", "correct horse", []string{"email"}},
		{"not an email", "ann-at-example.com", "Ann", "correct horse", []string{"email"}},
		{"display name", "Ann <ann@example.com>", "Ann", "correct horse", []string{"email"}},
		{"no domain dot", "ann@localhost", "Ann", "correct horse", []string{"email"}},
		{"blank name", "ann@example.com", "   ", "correct horse", []string{"name"}},
		{"long name", "ann@example.com", strings.Repeat("n", 101), "correct horse", []string{"name"}},
		{"short password", "ann@example.com", "Ann", "short", []string{"password"}},
		{"everything wrong", "x", "", "", []string{"email", "name", "password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewCustomer(tt.email, tt.cname, tt.password, nil, time.Now(), plain)
			if tt.wantFields == nil {
				if err != nil {
					t.Fatal(err)
				}
				if c.Email() != "ann@example.com" || c.Name() != "Ann" || !c.HasRole(RoleCustomer) || c.HasRole(RoleAdmin) {
					t.Fatalf("customer %+v", c)
				}
				if c.PasswordHash() != "hash:correct horse" || c.ID() == "" {
					t.Fatalf("hash %q id %q", c.PasswordHash(), c.ID())
				}
				return
			}
			var v *ValidationError
			if !errors.As(err, &v) {
				t.Fatalf("want a validation error, got %v", err)
			}
			var got []string
			for _, f := range v.Fields {
				got = append(got, f.Field)
			}
			if strings.Join(got, ",") != strings.Join(tt.wantFields, ",") {
				t.Fatalf("invalid fields %v, want %v", got, tt.wantFields)
			}
		})
	}
}

func TestPassword_HashAndVerify(t *testing.T) {
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$") {
		t.Fatalf("hash %q is not argon2id PHC", h)
	}
	if ok, err := VerifyPassword(h, "correct horse"); err != nil || !ok {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, err := VerifyPassword(h, "correct horsf"); err != nil || ok {
		t.Fatalf("wrong password: %v %v", ok, err)
	}
	h2, _ := HashPassword("correct horse")
	if h2 == h {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	if _, err := VerifyPassword("$2a$10$bcrypt", "x"); err == nil {
		t.Fatal("a non-argon2id hash must be an error")
	}
}
