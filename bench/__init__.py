"""The load-test harness: `python -m bench [--quick] [--only NAMES] [--out DIR]`.

Measures, on stock Envoy and our server, on this machine:
gateway memory and latency vs key count, server memory per key, JWKS serving
against nginx, mint latency and throughput against raw key generation (and
with the keypair pool), revocation and activation through Envoy, and a
sharded tenant up to a million keys. Writes JSON, Markdown and PNG plots.
"""
