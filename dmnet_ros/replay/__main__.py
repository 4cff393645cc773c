"""`python -m dmnet_ros.replay`: the `replay` console script."""
import sys

from dmnet_ros.replay.cli import main

sys.exit(main())
