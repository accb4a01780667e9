"""aggregator: a self-hosted news watch (feeds and pages in, curated feed and weekly digest out)."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/aggregator-news/aggregator"
