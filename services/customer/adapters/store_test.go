package adapters_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/mercato-shop/mercato/platform/storage"
	"github.com/mercato-shop/mercato/platform/storage/storagetest"
	"github.com/mercato-shop/mercato/services/customer/adapters"
	"github.com/mercato-shop/mercato/services/customer/app"
	"github.com/mercato-shop/mercato/services/customer/domain"
	"github.com/mercato-shop/mercato/services/customer/migrations"
)

func cheap(p string) (string, error) { return domain.HashPassword(p) }

func newCustomer(t *testing.T, email string) *domain.Customer {
	t.Helper()
	c, err := domain.NewCustomer(email, "Ann", "correct horse", nil, time.Now(), cheap)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStore(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		c := newCustomer(t, "ann@example.com")
		if err := s.Add(ctx, c); err != nil {
			t.Fatal(err)
		}
		if err := s.Add(ctx, newCustomer(t, "ANN@example.com")); !errors.Is(err, domain.ErrEmailTaken) {
			t.Fatalf("duplicate email: want ErrEmailTaken, got %v", err)
		}
		for name, get := range map[string]func() (*domain.Customer, error){
			"by email": func() (*domain.Customer, error) { return s.ByEmail(ctx, "ann@example.com") },
			"by id":    func() (*domain.Customer, error) { return s.ByID(ctx, c.ID()) },
		} {
			got, err := get()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got.ID() != c.ID() || got.Email() != c.Email() || got.Name() != c.Name() ||
				got.PasswordHash() != c.PasswordHash() || !got.CreatedAt().Equal(c.CreatedAt().Truncate(time.Microsecond)) ||
				!got.HasRole(domain.RoleCustomer) {
				t.Fatalf("%s: got %+v, want %+v", name, got, c)
			}
		}
		if _, err := s.ByID(ctx, "nobody"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("unknown id: %v", err)
		}
		if err := c.SetPassword("another secret", cheap); err != nil {
			t.Fatal(err)
		}
		if err := s.UpdatePassword(ctx, c); err != nil {
			t.Fatal(err)
		}
		got, _ := s.ByID(ctx, c.ID())
		if ok, _ := domain.VerifyPassword(got.PasswordHash(), "another secret"); !ok {
			t.Fatal("password not updated")
		}
	})
}

func TestEnsureAdmin(t *testing.T) {
	storagetest.Each(t, migrations.FS, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newStore(t, db)
		generated, err := app.EnsureAdmin(ctx, s, "")
		if err != nil || generated == "" {
			t.Fatalf("first start without a password: %q %v", generated, err)
		}
		admin, err := s.ByEmail(ctx, app.AdminEmail)
		if err != nil || !admin.HasRole(domain.RoleAdmin) {
			t.Fatalf("admin %+v %v", admin, err)
		}
		if ok, _ := domain.VerifyPassword(admin.PasswordHash(), generated); !ok {
			t.Fatal("the generated password does not log in")
		}
		// A restart without a password keeps the account as it is.
		if again, err := app.EnsureAdmin(ctx, s, ""); err != nil || again != "" {
			t.Fatalf("restart: %q %v", again, err)
		}
		// A given password replaces the old one.
		if _, err := app.EnsureAdmin(ctx, s, "chosen password"); err != nil {
			t.Fatal(err)
		}
		admin, _ = s.ByEmail(ctx, app.AdminEmail)
		if ok, _ := domain.VerifyPassword(admin.PasswordHash(), "chosen password"); !ok {
			t.Fatal("the chosen password does not log in")
		}
	})
}

func TestSigner_TokensVerifyAgainstTheKeySetAcrossRestarts(t *testing.T) {
	for _, e := range storagetest.Engines(t) {
		t.Run(e.Name, func(t *testing.T) {
			ctx := context.Background()
			cfg := adapters.TokenConfig{Issuer: "mercato", Audience: "mercato", TTL: time.Minute}
			c := newCustomer(t, "ann@example.com")

			signer, err := adapters.NewSigner(ctx, storagetest.Open(t, e, migrations.FS), cfg)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := signer.Issue(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			// A new process on the same database: same key, so the old token verifies.
			restarted, err := adapters.NewSigner(ctx, storagetest.Open(t, e, nil), cfg)
			if err != nil {
				t.Fatal(err)
			}
			set, err := restarted.JWKS()
			if err != nil {
				t.Fatal(err)
			}
			kf, err := keyfunc.NewJWKSetJSON(set)
			if err != nil {
				t.Fatal(err)
			}
			var claims adapters.Claims
			_, err = jwt.ParseWithClaims(tok.AccessToken, &claims, kf.Keyfunc,
				jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer("mercato"), jwt.WithAudience("mercato"), jwt.WithExpirationRequired())
			if err != nil {
				t.Fatalf("token from before the restart: %v", err)
			}
			if claims.Subject != c.ID() || claims.Email != c.Email() || len(claims.Roles) != 1 || claims.Roles[0] != domain.RoleCustomer {
				t.Fatalf("claims %+v", claims)
			}
			if exp := claims.ExpiresAt.Sub(claims.IssuedAt.Time); exp != time.Minute {
				t.Fatalf("token lives %v, want 1m", exp)
			}
		})
	}
}
