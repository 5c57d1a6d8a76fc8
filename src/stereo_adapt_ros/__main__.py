"""``python -m stereo_adapt_ros`` is the ``stereo-adapt`` command."""

from .cli.main import main

raise SystemExit(main())
