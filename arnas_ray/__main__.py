import sys

from arnas_ray.cli import main

sys.exit(main())
