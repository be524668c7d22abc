package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mercato-shop/mercato/platform/web"
)

// exchange is what the gateway learns about one request while serving it,
// for its access log and metrics: the route it matched and the instance
// that answered.
type exchange struct {
	route    string // "" when no route matched
	upstream string // the instance's address; "" when none answered
	version  string // the version a split chose; "" without a split
}

type exchangeKey struct{}

// exchangeOf returns the request's exchange record; nil outside the gateway.
func exchangeOf(ctx context.Context) *exchange {
	x, _ := ctx.Value(exchangeKey{}).(*exchange)
	return x
}

// observer writes the access log and keeps the metrics.
type observer struct {
	logger    *slog.Logger
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	upstreams *prometheus.CounterVec
}

func newObserver(logger *slog.Logger) *observer {
	return &observer{
		logger: logger,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_gateway_requests_total",
			Help: "Requests answered by the gateway, by route and status.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mercato_gateway_request_duration_seconds",
			Help:    "Time to answer a request, by route: to the end of the response.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		upstreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mercato_gateway_upstream_responses_total",
			Help: "Responses from upstream instances, by service, instance and status.",
		}, []string{"service", "instance", "code"}),
	}
}

// Collector is the gateway's metrics, for a registry.
func (g *Gateway) Collector() prometheus.Collector { return g.obs }

func (o *observer) Describe(ch chan<- *prometheus.Desc) {
	o.requests.Describe(ch)
	o.duration.Describe(ch)
	o.upstreams.Describe(ch)
}

func (o *observer) Collect(ch chan<- prometheus.Metric) {
	o.requests.Collect(ch)
	o.duration.Collect(ch)
	o.upstreams.Collect(ch)
}

// serve runs next with an exchange record, then logs and counts the request.
func (o *observer) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	start := time.Now()
	x := &exchange{}
	sw := &web.StatusWriter{ResponseWriter: w, Status: http.StatusOK}
	next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
	elapsed := time.Since(start)
	route := x.route
	if route == "" {
		route = "none" // bounded: unmatched paths are not labels
	}
	o.requests.WithLabelValues(route, strconv.Itoa(sw.Status)).Inc()
	o.duration.WithLabelValues(route).Observe(elapsed.Seconds())
	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("route", route),
		slog.String("upstream", x.upstream), slog.Int("status", sw.Status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000), slog.String("client", clientIP(r)),
	}
	if x.version != "" {
		attrs = append(attrs, slog.String("version", x.version))
	}
	o.logger.LogAttrs(r.Context(), slog.LevelInfo, "access", attrs...)
}

// upstreamAnswered records the instance that answered a proxied request.
func (o *observer) upstreamAnswered(resp *http.Response, service string) {
	instance := resp.Request.URL.Host
	if x := exchangeOf(resp.Request.Context()); x != nil {
		x.upstream = instance
	}
	o.upstreams.WithLabelValues(service, instance, strconv.Itoa(resp.StatusCode)).Inc()
}
