"""The compatibility tests start real workers, as the end-to-end tests do."""

from tests.e2e.conftest import cluster_factory  # noqa: F401  (fixture)
