"""Peer services that Graft's benchmarks compare against."""
