package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func TestNewClient_Validates(t *testing.T) {
	tests := []struct {
		name, id, cname, secret string
		scopes, roles           []string
		wantFields              []string
	}{
		{"valid", "reporting-job.v2", "Reporting", testSecret, []string{"orders:read", "stats"}, []string{"admin"}, nil},
		{"valid without roles", "partner_1", "Partner", testSecret + "-._~", []string{"orders:read"}, nil, nil},
		{"empty id", "", "Reporting", testSecret, []string{"s"}, nil, []string{"id"}},
		{"colon in id", "a:b", "Reporting", testSecret, []string{"s"}, nil, []string{"id"}},
		{"long id", strings.Repeat("a", 65), "Reporting", testSecret, []string{"s"}, nil, []string{"id"}},
		{"blank name", "job", "  ", testSecret, []string{"s"}, nil, []string{"name"}},
		{"short secret", "job", "Job", testSecret[1:], []string{"s"}, nil, []string{"secret"}},
		{"base64 secret", "job", "Job", testSecret + "+/=", []string{"s"}, nil, []string{"secret"}},
		{"no scopes", "job", "Job", testSecret, nil, nil, []string{"scopes"}},
		{"scope with a quote", "job", "Job", testSecret, []string{`a"b`}, nil, []string{"scopes"}},
		{"scope with a space", "job", "Job", testSecret, []string{"a b"}, nil, []string{"scopes"}},
		{"role with a comma", "job", "Job", testSecret, []string{"s"}, []string{"a,b"}, []string{"roles"}},
		{"empty role", "job", "Job", testSecret, []string{"s"}, []string{""}, []string{"roles"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.id, tt.cname, tt.secret, tt.scopes, tt.roles, time.Now())
			if tt.wantFields == nil {
				if err != nil {
					t.Fatal(err)
				}
				if c.ID() != tt.id || c.Subject() != "client:"+tt.id || !slices.Equal(c.Scopes(), tt.scopes) || len(c.Roles()) != len(tt.roles) {
					t.Fatalf("client %+v", c)
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
			if !slices.Equal(got, tt.wantFields) {
				t.Fatalf("invalid fields %v, want %v", got, tt.wantFields)
			}
			if strings.Contains(err.Error(), tt.secret) {
				t.Fatalf("the error shows the testSecret: %v", err)
			}
		})
	}
}

func TestClient_KeepsOnlyTheSecretsHash(t *testing.T) {
	c, err := NewClient("job", "Job", testSecret, []string{"s"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(testSecret))
	if c.SecretHash() != hex.EncodeToString(sum[:]) {
		t.Fatalf("testSecret hash %q, want the hex SHA-256 of the testSecret", c.SecretHash())
	}
	if !c.VerifySecret(testSecret) {
		t.Fatal("the right testSecret does not verify")
	}
	for _, wrong := range []string{"", testSecret[:31], testSecret + "0", strings.ToUpper(testSecret), c.SecretHash()} {
		if c.VerifySecret(wrong) {
			t.Fatalf("%q verifies", wrong)
		}
	}
}

func TestClient_GrantsASubsetOfItsScopes(t *testing.T) {
	c, err := NewClient("job", "Job", testSecret, []string{"orders:read", "stats", "orders:write"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		requested []string
		want      []string
		wantErr   error
	}{
		{"none asked: all", nil, []string{"orders:read", "stats", "orders:write"}, nil},
		{"a subset, in the client's order", []string{"orders:write", "orders:read"}, []string{"orders:read", "orders:write"}, nil},
		{"one not granted", []string{"orders:read", "admin"}, nil, ErrInvalidScope},
		{"a prefix is not the scope", []string{"orders"}, nil, ErrInvalidScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Grant(tt.requested)
			if !errors.Is(err, tt.wantErr) || !slices.Equal(got, tt.want) {
				t.Fatalf("Grant(%v) = %v, %v; want %v, %v", tt.requested, got, err, tt.want, tt.wantErr)
			}
		})
	}
}
