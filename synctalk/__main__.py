from synctalk.cli import main

raise SystemExit(main())
