package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
)

// DefaultMaxBody bounds request bodies unless a handler says otherwise.
const DefaultMaxBody = 1 << 20

// Decode reads one JSON object from the request body into v. It refuses
// bodies over maxBytes (413), a content type other than JSON (415), unknown
// fields, trailing data and malformed JSON (400). The error it returns is a
// *Problem ready for WriteProblem.
func Decode(w http.ResponseWriter, r *http.Request, v any, maxBytes int64) *Problem {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return NewProblem(http.StatusUnsupportedMediaType, "send the body as application/json")
		}
	}
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeProblem(err, maxBytes)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if p := decodeProblem(err, maxBytes); p.Status == http.StatusRequestEntityTooLarge {
			return p
		}
		return NewProblem(http.StatusBadRequest, "the body must hold a single JSON object")
	}
	return nil
}

func decodeProblem(err error, maxBytes int64) *Problem {
	var (
		tooLarge *http.MaxBytesError
		syntax   *json.SyntaxError
		typ      *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooLarge):
		return NewProblem(http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", maxBytes))
	case errors.Is(err, io.EOF):
		return NewProblem(http.StatusBadRequest, "the body is empty; send a JSON object")
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return NewProblem(http.StatusBadRequest, "the body is not valid JSON")
	case errors.As(err, &typ):
		return Invalid(FieldError{Field: typ.Field, Message: "must be a JSON " + typ.Type.Kind().String()})
	default:
		// encoding/json reports unknown fields only as text.
		return NewProblem(http.StatusBadRequest, err.Error())
	}
}
