"""``python -m geonode node.json``."""

from geonode.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
