"""What modelgate is tested and measured against, shared by tests/ and loadtests/.

Servers, each a context manager that starts on free loopback ports and stops what it started:
  gateway.GatewayProcess    `modelgate serve` as a child process (and `scrape`/`metric` for /metrics)
  triton.TritonServer       a real NVIDIA Triton (from .venv-triton, `make triton-peer`)
  prometheus.PrometheusServer  Debian's Prometheus scraping given targets
  otlp.OtlpReceiver         an OpenTelemetry trace receiver (OTLP/gRPC and HTTP) in this process
  recorder.RecorderServer   a KServe v2 server that logs the metadata of every call
  bare_server.BareServer    the transport's ceiling: ModelInfer answered with precomputed bytes
  bare_proxy.BareProxy      the floor of a hop: raw bytes forwarded to an upstream
  variants                  the gateway with parts of its hot path replaced (ab_hot_path.py)
  baseline.checkout         an earlier commit's tree, served beside the working tree (--baseline REV)

Measuring: perf_analyzer (runs and tables), procfs (CPU and memory from /proc), stats (medians,
ratios, interleaved rounds), bench (perf_analyzer per concurrency with CPU per request, tables,
results files), inprocess (the gateway built in this process, for the micro benchmarks).

Modules are imported one by one (`from harness.gateway import GatewayProcess`): triton.py must
stay importable without the gateway's dependencies, and nothing here is imported by `gateway`.
"""
