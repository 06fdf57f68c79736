"""Benchmarks that print figures; run by hand, never asserted in tests."""
