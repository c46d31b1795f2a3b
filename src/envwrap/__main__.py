from envwrap.cli import main

raise SystemExit(main())
