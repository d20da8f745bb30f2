from xaikit.cli import main; import sys; sys.exit(main())
