"""Slow, obviously-correct loop versions of the array code, written from docs/method.md: the
oracles the tests (and the benchmarks) compare the fast versions with."""
