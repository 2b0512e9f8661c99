"""``python -m bench``: run every provider of every case side by side; see ``bench/README.md``."""

from bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
