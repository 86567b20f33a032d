from squall.cli import main

raise SystemExit(main())
