package domain

import (
	"errors"
	"slices"
	"testing"
)

func TestNormalizeLines(t *testing.T) {
	got, err := NormalizeLines("o1", []Line{{"b", 2}, {"a", 1}, {"b", 3}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []Line{{"a", 1}, {"b", 5}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want merged and sorted %v", got, want)
	}
	for name, tc := range map[string]struct {
		order string
		lines []Line
	}{
		"no order":         {"", []Line{{"a", 1}}},
		"no lines":         {"o1", nil},
		"no product":       {"o1", []Line{{"", 1}}},
		"zero":             {"o1", []Line{{"a", 0}}},
		"negative":         {"o1", []Line{{"a", -3}}},
		"huge":             {"o1", []Line{{"a", MaxLineQuantity + 1}}},
		"huge once summed": {"o1", []Line{{"a", MaxLineQuantity}, {"a", 1}}},
	} {
		if _, err := NormalizeLines(tc.order, tc.lines); !errors.Is(err, ErrInvalidReservation) {
			t.Errorf("%s: want ErrInvalidReservation, got %v", name, err)
		}
	}
}
