"""The egress guard: URL policy and the proxy every browser request goes through."""
