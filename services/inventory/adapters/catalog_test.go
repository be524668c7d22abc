package adapters

import "testing"

// The design promises demos and benchmarks a deep catalog and one product
// that is nearly sold out.
func TestCatalog_IsDeepWithOneScarceProduct(t *testing.T) {
	c := Catalog()
	if len(c) < 12 {
		t.Fatalf("%d products, want at least 12", len(c))
	}
	scarce, skus := 0, map[string]bool{}
	for _, p := range c {
		if p.Available < 5 {
			scarce++
		} else if p.Available < 1000 {
			t.Errorf("%s has %d units, want at least 1000", p.SKU, p.Available)
		}
		if p.Price.Amount <= 0 || p.Price.Currency != "EUR" || skus[p.SKU] {
			t.Errorf("bad product %+v", p)
		}
		skus[p.SKU] = true
	}
	if scarce != 1 {
		t.Fatalf("%d scarce products, want 1", scarce)
	}
}
