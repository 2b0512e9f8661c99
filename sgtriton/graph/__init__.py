"""Configuration -> graph of typed nodes -> runnable modules and an inspectable plan."""
