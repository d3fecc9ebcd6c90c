"""Tests of palm.metrics, one file per module. A package, so that pytest (default `prepend`
import mode) names these files metrics.test_<module> and a same-named test file elsewhere
under tests/ cannot clash with them."""
